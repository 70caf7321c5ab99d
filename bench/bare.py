"""The reference for the hot path: a bare aiohttp app returning a fixed image body."""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", required=True, help="file whose bytes every response carries")
    args = parser.parse_args()
    body = Path(args.body).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/webp")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, reuse_port=True)


if __name__ == "__main__":
    main()

"""A small shop page whose product images come from originshield through signed URLs.

Run (with originshield on :8080 serving its sample folder):

    ORIGINSHIELD_SIGNING__KEYS=... IMAGE_BASE_URL=http://127.0.0.1:8080 \\
        uvicorn examples.fastapi_shop.app:app --port 8000

The Signer is built once at start-up and given to the templates as a global: building the
``<picture>`` markup costs a few HMACs per image and no I/O.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from proxy.settings import DEV_SIGNING_KEY
from proxy.signing import Signer

PRODUCTS = [
    {"id": 1, "name": "Red lamp", "image": "products/1.jpg", "price": "49.00"},
    {"id": 2, "name": "Blue vase", "image": "products/2.png", "price": "29.00"},
    {"id": 3, "name": "Green chair", "image": "products/3.jpg", "price": "119.00"},
]
WIDTHS = [200, 300, 400, 600, 800]
SIZES = "(max-width: 600px) 100vw, 300px"


def create_app(keys: list[str], base_url: str) -> FastAPI:
    app = FastAPI(title="Example shop")
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.globals["signer"] = Signer(keys, base_url=base_url)
    templates.env.globals["widths"] = WIDTHS
    templates.env.globals["sizes"] = SIZES

    @app.get("/", response_class=HTMLResponse)
    def product_list(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "products.html", {"products": PRODUCTS})

    return app


app = create_app(
    [k for k in os.environ.get("ORIGINSHIELD_SIGNING__KEYS", DEV_SIGNING_KEY).split(",") if k],
    os.environ.get("IMAGE_BASE_URL", "http://127.0.0.1:8080"),
)

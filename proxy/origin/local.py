"""A folder as the origin, for development and the embedded default."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import tempfile
from pathlib import Path

from proxy.errors import NotFound, OriginError, SourceTooLarge
from proxy.origin import SourceMeta, SourceObject


class LocalOrigin:
    def __init__(self, root: str | os.PathLike[str], *, max_object_bytes: int) -> None:
        self.root = Path(root).resolve()
        self.max_object_bytes = max_object_bytes

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Symlinks and '..' are resolved first, so nothing outside root is ever opened.
        if not path.is_relative_to(self.root) or path == self.root:
            raise NotFound("not found", detail=f"key escapes the origin root: {key!r}")
        return path

    def _meta(self, path: Path) -> SourceMeta:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound("not found") from None
        except OSError as exc:
            raise OriginError("origin error", detail=f"stat failed: {exc}") from None
        if not path.is_file():
            raise NotFound("not found")
        if st.st_size > self.max_object_bytes:
            raise SourceTooLarge("source object is too large")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return SourceMeta(f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime, st.st_size, kind)

    def _read(self, key: str, if_none_match: str | None) -> SourceObject | None:
        path = self._path(key)
        meta = self._meta(path)
        if if_none_match is not None and if_none_match == meta.etag:
            return None
        try:
            with path.open("rb") as fh:
                body = fh.read(self.max_object_bytes + 1)
        except FileNotFoundError:
            raise NotFound("not found") from None
        except OSError as exc:
            raise OriginError("origin error", detail=f"read failed: {exc}") from None
        if len(body) > self.max_object_bytes:
            raise SourceTooLarge("source object is too large")
        return SourceObject(body, meta)

    def _write(self, key: str, body: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(body)
        os.replace(tmp.name, path)

    async def fetch(self, key: str, *, if_none_match: str | None = None) -> SourceObject | None:
        return await asyncio.to_thread(self._read, key, if_none_match)

    async def stat(self, key: str) -> SourceMeta:
        return await asyncio.to_thread(lambda: self._meta(self._path(key)))

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(self._write, key, body)
        except OSError as exc:
            raise OriginError("origin error", detail=f"write failed: {exc}") from None

    async def ping(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            raise OriginError("origin unavailable", detail=f"{self.root} is not a folder")

    async def close(self) -> None:
        return None

"""A folder as the origin, for development and the embedded default."""

from __future__ import annotations

import asyncio
import os
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
        return SourceMeta(f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime, st.st_size)

    def _read(self, key: str) -> SourceObject:
        path = self._path(key)
        meta = self._meta(path)
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

    async def fetch(self, key: str) -> SourceObject:
        return await asyncio.to_thread(self._read, key)

    async def stat(self, key: str) -> SourceMeta:
        return await asyncio.to_thread(lambda: self._meta(self._path(key)))

    async def ping(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            raise OriginError("origin unavailable", detail=f"{self.root} is not a folder")

    async def close(self) -> None:
        return None

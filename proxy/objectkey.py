"""Raw request path -> bucket object key, refusing anything that could escape or confuse.

Pure. Checked before any I/O: traversal (``..`` in any encoding), backslashes, NUL and control
characters, empty segments, over-long keys and keys outside the allowed prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from proxy.errors import BadRequest, NotFound

MAX_KEY_BYTES = 1024  # S3 and B2 limit object names to 1024 bytes of UTF-8
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def object_key(raw_path: str, allowed_prefixes: Sequence[str] = ()) -> str:
    if not raw_path.startswith("/"):
        raise BadRequest("path must start with /")
    raw = unquote_to_bytes(raw_path[1:])
    if len(raw) > MAX_KEY_BYTES:
        raise BadRequest("object key too long")
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("object key is not valid UTF-8") from None
    if not key:
        raise NotFound("no object key")
    if _CONTROL.search(key):
        raise BadRequest("control character in object key")
    if "\\" in key:
        raise BadRequest("backslash in object key")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise BadRequest("empty, '.' or '..' segment in object key")
    if allowed_prefixes and not any(key.startswith(p) for p in allowed_prefixes):
        raise NotFound("not found")
    return key

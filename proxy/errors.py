"""Every failure originshield can answer with, as one hierarchy.

Each class knows its HTTP status, a public one-line message and whether the CDN may keep the
answer for a short while. Only the error middleware turns them into responses; anything that is
not a ``ProxyError`` becomes a 500 with a generic line and the detail goes to the log.

::

    ProxyError
    ├── BadRequest                400  malformed or unknown parameters, bad key
    │   ├── LimitExceeded         400  output size above the configured limits
    │   └── UriTooLong            414  request target above server.max_url_length
    ├── Forbidden                 403  token missing, wrong, expired
    │   └── Locked                403  did not come through Cloudflare (origin lock)
    ├── NotFound                  404  no such object in the bucket
    ├── MethodNotAllowed          405  anything but GET/HEAD
    ├── SourceTooLarge            413  object or pixel count above the limits
    ├── UnsupportedFormat         415  source format not on the allowlist
    ├── UndecodableImage          422  corrupt, truncated, not an image
    ├── Overloaded                503  queue full or transform deadline (Retry-After)
    │   └── TransformTimeout      503  a transform cancelled at its deadline
    ├── OriginError               502  the bucket answered with an error
    └── OriginTimeout             504  the bucket did not answer in time
"""

from __future__ import annotations


class ProxyError(Exception):
    status: int = 500
    category: str = "internal"

    def __init__(self, public: str, *, detail: str | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail or public


class BadRequest(ProxyError):
    status = 400
    category = "params"


class LimitExceeded(BadRequest):
    category = "limits"


class UriTooLong(BadRequest):
    status = 414
    category = "limits"


class Forbidden(ProxyError):
    status = 403
    category = "signature"


class Locked(Forbidden):
    category = "origin_lock"


class NotFound(ProxyError):
    status = 404
    category = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    category = "method"


class SourceTooLarge(ProxyError):
    status = 413
    category = "limits"


class UnsupportedFormat(ProxyError):
    status = 415
    category = "format"


class UndecodableImage(ProxyError):
    status = 422
    category = "decode"


class Overloaded(ProxyError):
    status = 503
    category = "overload"

    def __init__(self, public: str, *, retry_after: int = 1, detail: str | None = None) -> None:
        super().__init__(public, detail=detail)
        self.retry_after = retry_after


class TransformTimeout(Overloaded):
    category = "timeout"


class OriginError(ProxyError):
    status = 502
    category = "origin"


class OriginTimeout(OriginError):
    status = 504
    category = "origin_timeout"

"""Output format: from ``f``, the ``Accept`` header and what the source is. Pure.

``f=auto`` collapses ``Accept`` into one of three classes (avif, webp, other) before the cache
lookup, so the cache holds at most three variants per URL and ``Vary: Accept`` is only sent when
the format was actually negotiated.
"""

from __future__ import annotations

from typing import Literal

from proxy.options import TransformOptions

AcceptClass = Literal["avif", "webp", "other"]
OutputFormat = Literal["jpeg", "png", "webp", "avif", "gif"]
OUTPUTS: frozenset[str] = frozenset({"jpeg", "png", "webp", "avif", "gif"})
CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
}


def _accepts(accept: str, mime: str) -> bool:
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        if media.strip().lower() != mime:
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def accept_class(accept: str | None) -> AcceptClass:
    if not accept:
        return "other"
    if _accepts(accept, "image/avif"):
        return "avif"
    if _accepts(accept, "image/webp"):
        return "webp"
    return "other"


def variant(options: TransformOptions, accept: str | None) -> str:
    """The part of the cache key that depends on the request headers."""
    return accept_class(accept) if options.f == "auto" else ""


def vary_needed(options: TransformOptions) -> bool:
    return options.f == "auto"


def choose(
    options: TransformOptions,
    variant_class: str,
    *,
    source_format: str,
    has_alpha: bool,
    animated: bool,
) -> OutputFormat:
    """The format to encode, once the source's header is known."""
    f = options.f
    if f is not None and f != "auto":
        return f
    keep_animation = animated and options.anim
    if f is None:
        if source_format in OUTPUTS:
            return source_format  # type: ignore[return-value]
        return "png" if has_alpha else "jpeg"
    # f=auto
    if keep_animation:
        # Animated AVIF is not produced; WebP animates everywhere AVIF would be accepted.
        return "webp" if variant_class in ("avif", "webp") else "gif"
    if variant_class == "avif":
        return "avif"
    if variant_class == "webp":
        return "webp"
    return "png" if has_alpha else "jpeg"

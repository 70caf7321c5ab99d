"""Query -> frozen ``TransformOptions``; its canonical form is the cache key.

Pure. Parameter names follow Cloudflare Images where one exists. Unknown, duplicated, empty or
out-of-range parameters are a 400 with a one-line reason, never silently ignored: parameter
pollution is how signatures get bypassed and caches get flooded.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal
from urllib.parse import unquote_to_bytes

from proxy.errors import BadRequest, LimitExceeded

Fit = Literal["scale-down", "contain", "cover", "crop", "pad", "fill"]
Format = Literal["auto", "avif", "webp", "jpeg", "png", "gif"]
FITS: tuple[Fit, ...] = ("scale-down", "contain", "cover", "crop", "pad", "fill")
FORMATS: tuple[Format, ...] = ("auto", "avif", "webp", "jpeg", "png", "gif")
COMPASS = ("center", "north", "south", "east", "west", "northeast", "northwest", "southeast",
           "southwest", "auto")  # fmt: skip
PARAMS = ("w", "h", "fit", "g", "f", "q", "dpr", "v", "bg", "blur", "sharpen", "anim", "p")
# Parameters a preset-only deployment still accepts beside ``p``.
ALWAYS_ALLOWED = frozenset({"p", "v", "dpr"})

_INT = re.compile(r"[0-9]{1,5}")
_DECIMAL = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3})?")
_FOCAL = re.compile(r"(0(\.[0-9]{1,4})?|1(\.0{1,4})?)x(0(\.[0-9]{1,4})?|1(\.0{1,4})?)")
_VERSION = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


@dataclass(frozen=True, slots=True)
class Limits:
    max_width: int = 4096
    max_height: int = 4096
    max_pixels: int = 16_777_216
    allowed_widths: tuple[int, ...] = ()
    width_policy: Literal["round_up", "reject"] = "round_up"
    presets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    presets_only: bool = False


@dataclass(frozen=True, slots=True)
class TransformOptions:
    w: int | None = None
    h: int | None = None
    fit: Fit = "scale-down"
    g: str = "center"  # compass name, "auto", or a focal point "XxY"
    f: Format | None = None  # None: the source's format when it can be produced
    q: int | None = None  # None: the per-format default from config
    dpr: float = 1.0
    v: str | None = None
    bg: tuple[int, int, int] | None = None
    blur: float | None = None
    sharpen: float | None = None
    anim: bool = True

    @property
    def width(self) -> int | None:
        """Output width in pixels, after ``dpr``."""
        return None if self.w is None else max(1, round(self.w * self.dpr))

    @property
    def height(self) -> int | None:
        return None if self.h is None else max(1, round(self.h * self.dpr))

    @property
    def focal(self) -> tuple[float, float] | None:
        if "x" not in self.g:
            return None
        x, _, y = self.g.partition("x")
        return float(x), float(y)

    def canonical(self) -> str:
        """Stable text of every non-default option, sorted by name; ``dpr`` folded into w/h."""
        parts: list[str] = []
        for name, default in _CANONICAL_DEFAULTS:
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={_fmt(value)}")
        if self.width is not None:
            parts.append(f"w={self.width}")
        if self.height is not None:
            parts.append(f"h={self.height}")
        return "&".join(sorted(parts))


_DEFAULT = TransformOptions()
# ``dpr`` is folded into w/h, which are added after the others.
_CANONICAL_DEFAULTS = tuple(
    (f.name, getattr(_DEFAULT, f.name))
    for f in fields(TransformOptions)
    if f.name not in ("w", "h", "dpr")
)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "".join(f"{c:02x}" for c in value)
    return str(value)


def split_query(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` -> pairs, percent-decoded; ``+`` is a plus sign, not a space."""
    if not query:
        return []
    out: list[tuple[str, str]] = []
    for item in query.split("&"):
        if not item:
            raise BadRequest("empty query parameter")
        name, eq, value = item.partition("=")
        if not eq:
            raise BadRequest(f"parameter {name[:16]!r} has no value")
        out.append((_unquote(name), _unquote(value)))
    return out


def _unquote(text: str) -> str:
    if "%" not in text:
        return text  # nothing to decode, the common case
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("query is not valid UTF-8") from None


def _int(name: str, value: str, lo: int, hi: int) -> int:
    if not _INT.fullmatch(value):
        raise BadRequest(f"{name} must be a whole number")
    n = int(value)
    if not lo <= n <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return n


def _float(name: str, value: str, lo: float, hi: float) -> float:
    if not _DECIMAL.fullmatch(value):
        raise BadRequest(f"{name} must be a number")
    n = float(value)
    if not lo <= n <= hi:
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}")
    return n


def _bool(name: str, value: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BadRequest(f"{name} must be true or false")


def _color(value: str) -> tuple[int, int, int]:
    m = _HEX.fullmatch(value)
    if not m:
        raise BadRequest("bg must be a hex colour like ffffff or fff")
    text = m.group(1)
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _apply(values: dict[str, object], name: str, raw: str, limits: Limits) -> None:
    match name:
        case "w":
            values["w"] = _int("w", raw, 1, limits.max_width)
        case "h":
            values["h"] = _int("h", raw, 1, limits.max_height)
        case "fit":
            if raw not in FITS:
                raise BadRequest(f"fit must be one of {', '.join(FITS)}")
            values["fit"] = raw
        case "g":
            if raw == "centre":
                raw = "center"
            if raw not in COMPASS and not _FOCAL.fullmatch(raw):
                raise BadRequest("g must be a compass side, auto, or a focal point like 0.5x0.3")
            values["g"] = raw
        case "f":
            if raw == "jpg":
                raw = "jpeg"
            if raw not in FORMATS:
                raise BadRequest(f"f must be one of {', '.join(FORMATS)}")
            values["f"] = raw
        case "q":
            values["q"] = _int("q", raw, 1, 100)
        case "dpr":
            dpr = _float("dpr", raw, 1, 3)
            # One decimal keeps the number of variants bounded.
            if round(dpr, 1) != dpr:
                raise BadRequest("dpr takes at most one decimal")
            values["dpr"] = dpr
        case "v":
            if not _VERSION.fullmatch(raw):
                raise BadRequest("v must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
            values["v"] = raw
        case "bg":
            values["bg"] = _color(raw)
        case "blur":
            values["blur"] = _float("blur", raw, 0.3, 250)
        case "sharpen":
            values["sharpen"] = _float("sharpen", raw, 0, 10)
        case "anim":
            values["anim"] = _bool("anim", raw)
        case _:
            raise BadRequest(f"unknown parameter {name[:32]!r}")


def _round_width(w: int, limits: Limits) -> int:
    widths = limits.allowed_widths
    i = bisect.bisect_left(widths, w)
    if i < len(widths) and widths[i] == w:
        return w
    if limits.width_policy == "reject" or i == len(widths):
        raise BadRequest(f"w must be one of {', '.join(map(str, widths))}")
    return widths[i]


def parse(pairs: Iterable[tuple[str, str]], limits: Limits = Limits()) -> TransformOptions:
    seen: set[str] = set()
    explicit: dict[str, str] = {}
    for name, raw in pairs:
        if name in seen:
            raise BadRequest(f"parameter {name[:32]!r} given twice")
        seen.add(name)
        if name not in PARAMS:
            raise BadRequest(f"unknown parameter {name[:32]!r}")
        if limits.presets_only and name not in ALWAYS_ALLOWED:
            raise BadRequest(f"only presets are allowed here; {name!r} is not")
        explicit[name] = raw
    values: dict[str, object] = {}
    preset = explicit.pop("p", None)
    if preset is not None:
        found = limits.presets.get(preset)
        if found is None:
            raise BadRequest(f"unknown preset {preset[:32]!r}")
        for name, raw in found.items():
            _apply(values, name, raw, limits)
    elif limits.presets_only:
        raise BadRequest("a preset (p=) is required")
    for name, raw in explicit.items():
        _apply(values, name, raw, limits)
    if limits.allowed_widths and "w" in values:
        values["w"] = _round_width(int(values["w"]), limits)  # type: ignore[call-overload]
    opts = TransformOptions(**values)  # type: ignore[arg-type]
    _check_limits(opts, limits)
    return opts


def _check_limits(opts: TransformOptions, limits: Limits) -> None:
    width, height = opts.width, opts.height
    if width is not None and width > limits.max_width:
        raise LimitExceeded(f"w x dpr must be at most {limits.max_width}")
    if height is not None and height > limits.max_height:
        raise LimitExceeded(f"h x dpr must be at most {limits.max_height}")
    if width is not None and height is not None and width * height > limits.max_pixels:
        raise LimitExceeded(f"w x h must be at most {limits.max_pixels} pixels")


def preset_table(raw: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, str]]:
    """Config presets with every value as the query text it stands for."""
    table: dict[str, dict[str, str]] = {}
    for name, params in raw.items():
        entry: dict[str, str] = {}
        for key, value in params.items():
            if key not in PARAMS or key == "p":
                raise ValueError(f"presets.{name}.{key}: not a transform parameter")
            if isinstance(value, bool):
                entry[key] = "true" if value else "false"
            else:
                entry[key] = str(value)
        table[name] = entry
    return table


def validate_presets(table: Mapping[str, Mapping[str, str]], limits: Limits) -> None:
    """Parse every preset once at start-up so a bad one fails fast, naming itself."""
    probe = replace(limits, presets=table, presets_only=False)
    for name in table:
        try:
            parse([("p", name)], probe)
        except BadRequest as exc:
            raise ValueError(f"presets.{name}: {exc.public}") from None


def allowed_widths(widths: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(widths)))

"""Option parsing: strictness, canonical form, presets, width policy, limits."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequest, LimitExceeded
from proxy.options import Limits, TransformOptions, parse, preset_table, split_query

DEFAULT = Limits()


def p(query: str, limits: Limits = DEFAULT) -> TransformOptions:
    return parse(split_query(query), limits)


def test_defaults() -> None:
    opts = p("")
    assert opts == TransformOptions()
    assert opts.canonical() == ""


def test_full_set() -> None:
    opts = p(
        "w=400&h=300&fit=cover&g=north&f=webp&q=70&dpr=2&v=abc&bg=fff&blur=2&sharpen=1&anim=false"
    )
    assert (opts.width, opts.height) == (800, 600)
    assert opts.fit == "cover"
    assert opts.bg == (255, 255, 255)
    assert opts.anim is False


def test_canonical_ignores_order_and_folds_dpr() -> None:
    a = p("w=400&f=webp&dpr=2")
    b = p("dpr=2&f=webp&w=400")
    c = p("f=webp&w=800")
    assert a.canonical() == b.canonical() == c.canonical() == "f=webp&w=800"


def test_canonical_drops_defaults() -> None:
    assert p("fit=scale-down&g=center&anim=true&w=5").canonical() == "w=5"
    assert p("f=jpg").canonical() == "f=jpeg"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("w=abc", "w must be a whole number"),
        ("w=0", "w must be between 1 and 4096"),
        ("w=-5", "w must be a whole number"),
        ("w=+5", "w must be a whole number"),
        ("w=1e3", "w must be a whole number"),
        ("w=5000", "w must be between 1 and 4096"),
        ("w=1&w=2", "parameter 'w' given twice"),
        ("width=100", "unknown parameter 'width'"),
        ("W=100", "unknown parameter 'W'"),
        ("fit=stretch", "fit must be one of"),
        ("f=bmp", "f must be one of"),
        ("q=0", "q must be between 1 and 100"),
        ("q=101", "q must be between 1 and 100"),
        ("dpr=4", "dpr must be between 1 and 3"),
        ("dpr=1.25", "dpr takes at most one decimal"),
        ("g=middle", "g must be"),
        ("g=1.5x0.5", "g must be"),
        ("bg=zzz", "bg must be a hex colour"),
        ("blur=0.1", "blur must be between 0.3 and 250"),
        ("sharpen=11", "sharpen must be between 0 and 10"),
        ("anim=maybe", "anim must be true or false"),
        ("v=a/b", "v must be"),
        ("w", "has no value"),
        ("w=1&", "empty query parameter"),
        ("p=nope", "unknown preset"),
        ("w=%ff", "not valid UTF-8"),
    ],
)
def test_bad_values_are_400_with_a_reason(query: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        p(query)
    assert reason in info.value.public
    assert "\n" not in info.value.public


def test_percent_encoded_names_and_values_mean_the_same() -> None:
    assert p("%77=4%30%30&f=%77ebp") == p("w=400&f=webp")
    assert split_query("v=%C3%A9") == [("v", "\u00e9")]


def test_plus_is_not_a_space() -> None:
    with pytest.raises(BadRequest):
        p("w=1+2")


def test_output_limits() -> None:
    limits = Limits(max_width=1000, max_height=1000, max_pixels=500_000)
    with pytest.raises(LimitExceeded):
        p("w=600&dpr=2", limits)
    with pytest.raises(LimitExceeded):
        p("w=1000&h=1000", limits)
    assert p("w=500&dpr=2", limits).width == 1000


def test_presets_expand_and_accept_overrides() -> None:
    presets = preset_table({"card": {"w": 600, "h": 600, "fit": "cover", "f": "auto"}})
    limits = Limits(presets=presets)
    card = p("p=card", limits)
    assert (card.w, card.h, card.fit, card.f) == (600, 600, "cover", "auto")
    assert p("p=card&w=300", limits).w == 300
    assert card.canonical() == p("w=600&h=600&fit=cover&f=auto", limits).canonical()


def test_presets_only_refuses_free_parameters() -> None:
    presets = preset_table({"thumb": {"w": 160}})
    limits = Limits(presets=presets, presets_only=True)
    assert p("p=thumb&dpr=2", limits).width == 320
    with pytest.raises(BadRequest, match="only presets"):
        p("p=thumb&w=500", limits)
    with pytest.raises(BadRequest, match="preset"):
        p("v=1", limits)


def test_width_policy() -> None:
    up = Limits(allowed_widths=(200, 400, 800))
    assert p("w=300", up).w == 400
    assert p("w=400", up).w == 400
    with pytest.raises(BadRequest):
        p("w=900", up)
    reject = Limits(allowed_widths=(200, 400, 800), width_policy="reject")
    with pytest.raises(BadRequest, match="w must be one of 200, 400, 800"):
        p("w=300", reject)


def test_focal_point_and_compass() -> None:
    assert p("g=0.25x0.7").focal == (0.25, 0.7)
    assert p("g=centre").g == "center"
    assert p("g=southwest").focal is None

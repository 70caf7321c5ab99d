"""Signing: the DESIGN vectors, both token forms and encodings, rotation, forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

import pytest

from proxy.errors import Forbidden
from proxy.signing import Signer, Verifier, build_target, split_target

SECRET = "mysecrettoken"


def waf_mac(secret: str, message: str, ts: int) -> bytes:
    return hmac.new(secret.encode(), f"{message}{ts}".encode(), hashlib.sha256).digest()


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1484063787, "XsZ5NmtNBxOd4f4fBOtqVmpWRnDRNkHKVZieqDPKu3U="),
        (1700000003, "jyIqK4eTfM7QzAbKCZWvrPgWUcnwNH/2NTzSNKi+COM="),
    ],
)
def test_design_vectors(ts: int, expected: str) -> None:
    signer = Signer([SECRET])
    url = signer.timed_target("/images/cat.jpg", ts)
    assert url == f"/images/cat.jpg?verify={ts}-{quote(expected, safe='')}"
    verifier = Verifier([SECRET], ttl=60, clock=lambda: ts + 1)
    assert verifier.verify(url).expires_at == ts + 60


def test_url_safe_encoding_of_the_vector_verifies() -> None:
    url = "/images/cat.jpg?verify=1700000003-jyIqK4eTfM7QzAbKCZWvrPgWUcnwNH_2NTzSNKi-COM"
    Verifier([SECRET], ttl=60, clock=lambda: 1700000004).verify(url)


def test_unencoded_standard_base64_verifies() -> None:
    """A raw '+' and '/' are the same MAC bytes as their %2B/%2F escapes."""
    url = "/images/cat.jpg?verify=1700000003-jyIqK4eTfM7QzAbKCZWvrPgWUcnwNH/2NTzSNKi+COM="
    Verifier([SECRET], ttl=60, clock=lambda: 1700000004).verify(url)


def test_space_instead_of_plus_refused() -> None:
    url = "/images/cat.jpg?verify=1700000003-jyIqK4eTfM7QzAbKCZWvrPgWUcnwNH/2NTzSNKi%20COM="
    with pytest.raises(Forbidden):
        Verifier([SECRET], ttl=60, clock=lambda: 1700000004).verify(url)


def test_timed_token_with_query_covers_the_query() -> None:
    signer = Signer([SECRET])
    url = signer.timed_url("a/b.jpg", issued_at=1700000000, w=400, f="webp")
    assert url.startswith("/a/b.jpg?f=webp&w=400&verify=1700000000-")
    mac = base64.b64encode(waf_mac(SECRET, "/a/b.jpg?f=webp&w=400", 1700000000)).decode()
    assert url.endswith(quote(mac, safe=""))
    verifier = Verifier([SECRET], ttl=300, clock=lambda: 1700000100)
    verified = verifier.verify(url)
    assert verified.query == "f=webp&w=400"
    assert verified.path == "/a/b.jpg"


def test_permanent_signature_format() -> None:
    url = Signer([SECRET]).url("products/1.jpg", w=400, f="webp")
    assert url.startswith("/products/1.jpg?f=webp&w=400&s=")
    mac = hmac.new(SECRET.encode(), b"/products/1.jpg?f=webp&w=400", hashlib.sha256).digest()
    assert url.split("&s=")[1] == base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert Verifier([SECRET], ttl=1).verify(url).expires_at is None


def test_no_params_uses_question_mark() -> None:
    url = Signer([SECRET]).url("x.jpg")
    assert url.startswith("/x.jpg?s=")
    Verifier([SECRET], ttl=1).verify(url)


def test_base_url_prefix_not_signed() -> None:
    url = Signer([SECRET], base_url="https://img.example.com/").url("x.jpg", w=10)
    assert url.startswith("https://img.example.com/x.jpg?w=10&s=")
    Verifier([SECRET], ttl=1).verify(url.removeprefix("https://img.example.com"))


def test_rotation_every_key_verifies() -> None:
    old, new = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    verifier = Verifier([new, old], ttl=60)
    verifier.verify(Signer([old]).url("k.jpg", w=1))
    verifier.verify(Signer([new]).url("k.jpg", w=1))
    with pytest.raises(Forbidden):
        Verifier([new], ttl=60).verify(Signer([old]).url("k.jpg", w=1))


def test_expired_and_future_tokens() -> None:
    signer = Signer([SECRET])
    url = signer.timed_url("k.jpg", issued_at=1000, w=1)
    Verifier([SECRET], ttl=100, clock=lambda: 1099).verify(url)
    with pytest.raises(Forbidden, match="expired"):
        Verifier([SECRET], ttl=100, clock=lambda: 1100).verify(url)
    with pytest.raises(Forbidden, match="future"):
        Verifier([SECRET], ttl=100, max_skew=60, clock=lambda: 900).verify(url)


def test_window_floors_issue_time() -> None:
    signer = Signer([SECRET], clock=lambda: 1700000123)
    a = signer.timed_url("k.jpg", window=300, w=1)
    b = Signer([SECRET], clock=lambda: 1700000299).timed_url("k.jpg", window=300, w=1)
    assert a == b
    assert "verify=1700000100-" in a


def test_unsigned_allowed_only_when_not_required() -> None:
    with pytest.raises(Forbidden, match="missing"):
        Verifier([SECRET], ttl=1).verify("/k.jpg?w=1")
    verified = Verifier([SECRET], ttl=1, required=False).verify("/k.jpg?w=1")
    assert not verified.signed
    assert verified.query == "w=1"
    with pytest.raises(Forbidden):
        Verifier([SECRET], ttl=1, required=False).verify("/k.jpg?w=1&s=bogus")


FORGERIES = [
    "{url}&w=2",  # parameter after the token
    "{url}&s={mac}",  # token twice
    "/k.jpg?s={mac}&w=1",  # token first
    "{base}&S={mac}",  # case variant of the name
    "{base}&%73={mac}",  # encoded name
    "{url}x",  # trailing garbage
    "{url}%00",
    "{base}&s={mac}=",
    "{base}&s= {mac}",
    "{base}&verify=1700000000-{mac}",  # wrong form for the MAC
    "/K.jpg?w=1&s={mac}",  # path changed
    "/k.jpg?w=01&s={mac}",  # same value, other spelling
    "/k.jpg?w=1&&s={mac}",
    "/k.jpg?w%3D1&s={mac}",
]


@pytest.mark.parametrize("template", FORGERIES)
def test_forgery_table(template: str) -> None:
    url = Signer([SECRET]).url("k.jpg", w=1)
    base, mac = url.split("&s=")
    forged = template.format(url=url, base=base, mac=mac)
    with pytest.raises(Forbidden):
        Verifier([SECRET], ttl=60).verify(forged)


def test_split_target_token_must_be_last() -> None:
    assert split_target("/a?w=1&s=x") == ("/a", "w=1", "s", "x")
    assert split_target("/a") == ("/a", "", None, None)
    with pytest.raises(Forbidden):
        split_target("/a?verify=1&w=1")


def test_build_target_sorts_and_escapes() -> None:
    assert build_target("dir/a b.jpg", {"w": 1, "f": "webp"}) == "/dir/a%20b.jpg?f=webp&w=1"
    with pytest.raises(ValueError, match="reserved"):
        build_target("a.jpg", {"s": "x"})


def test_srcset_and_picture() -> None:
    signer = Signer([SECRET], base_url="https://img.test")
    srcset = signer.srcset("p.jpg", [400, 800], f="webp")
    parts = srcset.split(", ")
    assert parts[0].startswith("https://img.test/p.jpg?f=webp&w=400&s=") and parts[0].endswith(
        " 400w"
    )
    assert parts[1].endswith(" 800w")
    html = signer.picture("p.jpg", [400, 800], "(max-width: 600px) 100vw, 600px", alt="A <b>")
    assert html.count("<source") == 2
    assert 'type="image/avif"' in html and 'type="image/webp"' in html
    assert 'alt="A &lt;b&gt;"' in html
    assert "&amp;s=" in html


def test_empty_keys_rejected() -> None:
    with pytest.raises(ValueError, match="key"):
        Signer([])
    with pytest.raises(ValueError, match="key"):
        Verifier([""], ttl=1)


def test_shared_vectors() -> None:
    """The vectors the Worker tests use too, so the two implementations cannot drift."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parent / "vectors" / "signing.json").read_text())
    signer = Signer([doc["secret"]])
    for case in doc["permanent"]:
        assert signer.url(case["key"], **case["params"]) == case["url"]
        Verifier([doc["secret"]], ttl=doc["ttl"]).verify(case["url"])
    for case in doc["timed"]:
        url = signer.timed_url(case["key"], issued_at=case["issued_at"], **case["params"])
        assert url == case["url"]
        clock = lambda ts=case["issued_at"]: ts + 10  # noqa: E731
        Verifier([doc["secret"]], ttl=doc["ttl"], clock=clock).verify(case["url"])
    for case in doc["waf"]:
        expected = base64.b64encode(waf_mac(case["secret"], case["message"], case["ts"])).decode()
        assert expected == case["mac"]
    for forged in doc["forged"]:
        with pytest.raises(Forbidden):
            Verifier([doc["secret"]], ttl=doc["ttl"]).verify(forged)


def test_window_must_leave_the_token_most_of_its_life() -> None:
    signer = Signer([SECRET], ttl=3600, clock=lambda: 1700000000)
    assert "verify=" in signer.timed_url("k.jpg", window=1800, w=1)
    with pytest.raises(ValueError, match="window"):
        signer.timed_url("k.jpg", window=1801, w=1)
    # Without a ttl the signer cannot tell, and signs.
    assert "verify=" in Signer([SECRET]).timed_url("k.jpg", window=7200, w=1)

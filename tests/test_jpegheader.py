"""The JPEG header read in Python agrees with libvips, and anything unusual is left to libvips."""

from __future__ import annotations

from typing import Any

import pytest
import pyvips

from proxy import jpegheader, sourceinfo, transform
from proxy.errors import SourceTooLarge, UndecodableImage
from proxy.jpegheader import JpegHeader
from proxy.options import parse
from tests import icc, images


def libvips_view(data: bytes) -> tuple[int, int, int, bool]:
    image = pyvips.Image.new_from_buffer(data, "")
    fields = image.get_fields()
    orientation = image.get("orientation") if "orientation" in fields else 1
    return image.width, image.height, orientation, "icc-profile-data" in fields


def ours(data: bytes) -> tuple[int, int, int, bool]:
    header = jpegheader.read(data)
    assert header is not None
    return header.width, header.height, header.orientation, header.has_profile


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_and_size_match_libvips(orientation: int) -> None:
    data = images.with_orientation(images.marked(120, 80), orientation)
    assert ours(data) == libvips_view(data)
    assert ours(data)[2] == orientation


@pytest.mark.parametrize("q", [50, 95])
def test_plain_progressive_and_grey_match_libvips(q: int) -> None:
    photo = images.photo(333, 201)
    for data in (
        images.jpeg(photo, q),
        bytes(photo.jpegsave_buffer(Q=q, interlace=True, optimize_coding=True)),
        bytes(photo.colourspace("b-w").jpegsave_buffer(Q=q)),
    ):
        assert ours(data) == libvips_view(data)
    assert jpegheader.read(bytes(photo.colourspace("b-w").jpegsave_buffer())) == JpegHeader(
        333, 201, 1, 1, False
    )


def test_embedded_profile_is_seen() -> None:
    tagged = images.photo(64, 48).copy()
    tagged.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc.adobe_rgb())
    data = bytes(tagged.jpegsave_buffer(keep="icc"))
    assert ours(data) == libvips_view(data)
    assert ours(data)[3] is True


def test_unusual_files_are_left_to_libvips() -> None:
    cmyk = bytes(images.photo(40, 30).colourspace("cmyk").jpegsave_buffer())
    assert jpegheader.read(cmyk) is None  # four components
    good = images.jpeg(images.photo(40, 30))
    for broken in (
        b"",
        good[:2],
        good[:200],  # cut before the start of scan
        b"\xff\xd8\x00" + good[3:],  # not a marker where one must be
        good[:4] + b"\x00\x01" + good[6:],  # segment length below 2
    ):
        assert jpegheader.read(broken) is None
    # Unusual files still get an answer: through libvips, with its limits and errors.
    info = sourceinfo.probe(cmyk, "jpeg", 10_000)
    assert (info.width, info.height) == (40, 30)
    with pytest.raises(UndecodableImage):
        sourceinfo.probe(good[:200] + b"\x00" * 8, "png", 10_000)


def test_malformed_exif_is_left_to_libvips() -> None:
    data = images.with_orientation(images.marked(60, 40), 6)
    start = data.index(b"Exif\x00\x00") + 6
    wrong_magic = data[: start + 2] + b"\x00\x00" + data[start + 4 :]
    assert jpegheader.read(wrong_magic) is None
    info = sourceinfo.probe(wrong_magic, "jpeg", 10_000)
    assert info.format == "jpeg"


def test_pixel_limit_applies_to_the_header_read_in_python() -> None:
    data = images.jpeg(images.photo(300, 200))
    with pytest.raises(SourceTooLarge):
        sourceinfo.probe(data, "jpeg", 300 * 200 - 1)
    assert sourceinfo.probe(data, "jpeg", 300 * 200).width == 300


def test_a_header_that_disagrees_with_libjpeg_is_refused(monkeypatch: Any) -> None:
    # Should the Python reading ever differ from libjpeg's, the size limits would have been
    # checked on the wrong size: the loader's own size is compared before decoding.
    data = images.jpeg(images.photo(1600, 1200))
    real = jpegheader.read(data)
    assert real is not None
    lie = JpegHeader(400, 300, real.components, real.orientation, real.has_profile)
    monkeypatch.setattr(jpegheader, "read", lambda _: lie)
    with pytest.raises(UndecodableImage, match="inconsistent"):
        transform.render(data, parse([("w", "100")]), "", transform.TransformConfig())

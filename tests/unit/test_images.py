"""`medbatch.images`: every bad image is a clear `ImageLoadError`; odd ones become RGB."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from medbatch.errors import ImageLoadError
from medbatch.images import encode_image, inspect_image, load_image, native_size, to_data_url
from medbatch.records import ImageRef

PROBLEMS = {
    "empty": "is empty (0 bytes)",
    "not_an_image": "is not a readable image",
    "truncated": "corrupt or truncated",
    "decompression_bomb": "decompression-bomb limit",
    "missing": "cannot read image file",
}


@pytest.mark.parametrize(("kind", "expected"), list(PROBLEMS.items()))
def test_each_bad_image_raises_a_clear_error(
    bad_images: dict[str, Path], kind: str, expected: str
) -> None:
    ref = ImageRef.from_path(bad_images[kind])

    with pytest.raises(ImageLoadError, match=re.escape(expected)) as caught:
        load_image(ref)
    assert bad_images[kind].name in str(caught.value)  # names the file
    info = inspect_image(ref)  # never raises
    assert (info.ok, info.problem) == (False, kind)
    assert expected in (info.message or "")


@pytest.mark.parametrize("kind", ["cmyk", "16bit", "palette", "alpha", "exif_rotated"])
def test_odd_images_load_as_rgb_and_say_what_changed(
    odd_images: dict[str, Path], kind: str
) -> None:
    ref = ImageRef.from_path(odd_images[kind])
    image = load_image(ref)

    assert image.mode == "RGB"
    info = inspect_image(ref)
    assert info.ok
    assert info.normalised  # reported, e.g. "CMYK converted to RGB"


def test_exif_orientation_is_applied(odd_images: dict[str, Path]) -> None:
    ref = ImageRef.from_path(odd_images["exif_rotated"])
    assert load_image(ref).size == (40, 80)  # stored 80×40, displayed upright
    data, media_type = encode_image(ref)
    with Image.open(io.BytesIO(data)) as sent:  # back-ends ignore EXIF: send it upright
        assert (sent.size, media_type) == ((40, 80), "image/jpeg")


def test_alpha_is_flattened_on_white_and_16_bit_is_rescaled(odd_images: dict[str, Path]) -> None:
    assert load_image(ImageRef.from_path(odd_images["alpha"])).getpixel((0, 0)) == (255, 255, 255)
    grey = load_image(ImageRef.from_path(odd_images["16bit"])).convert("L")
    assert grey.getextrema() == (0, 255)  # the full range is used, not clipped at 255


def test_resize_to_the_model_native_size() -> None:
    big = Image.new("RGB", (2213, 1572), (255, 240, 240))
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG")
    ref = ImageRef.from_bytes(buffer.getvalue(), media_type="image/jpeg")
    side = native_size("google/medgemma-4b-it")

    assert side == 896
    assert load_image(ref, max_side=side).size == (896, 636)
    url = to_data_url(ref, max_side=side)
    assert url.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as sent:
        assert sent.size == (896, 636)
    assert native_size("some-other-model") is None


def test_small_upright_jpeg_is_passed_through_byte_for_byte(bad_images: dict[str, Path]) -> None:
    ref = ImageRef.from_path(bad_images["good"])
    assert encode_image(ref, max_side=896) == (bad_images["good"].read_bytes(), "image/jpeg")
    assert (
        to_data_url(ImageRef.from_url("https://example.org/a.jpg")) == "https://example.org/a.jpg"
    )

"""Shared unit-test fixtures: one image file per problem kind, and oddly encoded images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbatch.testing.bad_images import bomb_png


def jpeg_bytes(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **params)
    return buffer.getvalue()


def _write_bad_images(folder: Path) -> dict[str, Path]:
    """One file per problem kind, plus two good ones; returns kind → path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (120, 90), (250, 200, 210))
    truncated = jpeg_bytes(Image.effect_noise((200, 150), 60).convert("RGB"), quality=95)
    files: dict[str, bytes] = {
        "good": jpeg_bytes(good),
        "good_png": b"",  # filled below
        "empty": b"",
        "not_an_image": b"patient list, do not share\n",
        "truncated": truncated[: len(truncated) // 2],
        "decompression_bomb": bomb_png(),
    }
    paths = {kind: folder / f"{kind}.jpg" for kind in files}
    paths["good_png"] = folder / "good_png.png"
    paths["decompression_bomb"] = folder / "decompression_bomb.png"
    buffer = io.BytesIO()
    good.save(buffer, format="PNG")
    files["good_png"] = buffer.getvalue()
    for kind, data in files.items():
        paths[kind].write_bytes(data)
    paths["missing"] = folder / "missing.jpg"  # never written
    return paths


def _write_odd_images(folder: Path) -> dict[str, Path]:
    """Images that load after normalisation: CMYK, 16-bit, palette, alpha, EXIF-rotated."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["cmyk"] = folder / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 120, 60, 0)).save(paths["cmyk"], format="JPEG")
    paths["16bit"] = folder / "sixteen.png"
    ramp = np.linspace(1000, 4000, 64 * 48, dtype=np.uint16).reshape(48, 64)
    Image.fromarray(ramp).save(paths["16bit"])
    paths["palette"] = folder / "palette.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).convert("P").save(paths["palette"])
    paths["alpha"] = folder / "alpha.png"
    Image.new("RGBA", (64, 48), (255, 0, 0, 0)).save(paths["alpha"])
    paths["exif_rotated"] = folder / "rotated.jpg"
    wide = Image.new("RGB", (80, 40), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    wide.save(paths["exif_rotated"], format="JPEG", exif=exif.tobytes())
    return paths


@pytest.fixture
def bad_images(tmp_path: Path) -> dict[str, Path]:
    """kind → path for: good, good_png, empty, not_an_image, truncated, decompression_bomb,
    missing (the last is never written)."""
    return _write_bad_images(tmp_path / "bad")


@pytest.fixture
def odd_images(tmp_path: Path) -> dict[str, Path]:
    """kind → path for: cmyk, 16bit, palette, alpha, exif_rotated (all load as RGB)."""
    return _write_odd_images(tmp_path / "odd")

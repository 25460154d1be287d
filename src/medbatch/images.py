"""One place that turns an `ImageRef` into what a back-end wants.

```
ImageRef ──load_image──▶ PIL RGB (EXIF orientation applied, CMYK/16-bit/palette/alpha → RGB,
   │                               optional shrink to the model's native size)
   ├──encode_image──▶ (JPEG/PNG bytes, media type)     passed through when already fine
   ├──to_data_url───▶ "data:image/jpeg;base64,…"       OpenAI-style image_url parts
   └──inspect_image─▶ ImageInfo                        pre-flight: what is wrong or normalised
```

Every failure is an `ImageLoadError` whose message names the image and the problem (empty,
not an image, truncated, decompression bomb); inside a run it becomes that record's
`RecordError`, and the other records go on.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from medbatch.errors import ImageLoadError
from medbatch.records import ImageRef

__all__ = [
    "MODEL_IMAGE_SIZES",
    "ImageInfo",
    "ImageProblem",
    "encode_image",
    "inspect_image",
    "load_image",
    "native_size",
    "to_data_url",
]

MODEL_IMAGE_SIZES: dict[str, int] = {
    # The vision encoder's input side in pixels. Gemma 3's SigLIP encoder sees 896×896
    # (MedGemma inherits it); anything larger is shrunk by the processor anyway, so sending
    # more only costs upload time and tokens-per-second.
    "gemma-3": 896,
    "medgemma": 896,
    "paligemma": 896,
}

ImageProblem = Literal["missing", "empty", "not_an_image", "truncated", "decompression_bomb"]


class _ImageProblemError(ImageLoadError):
    """An `ImageLoadError` that also says which problem it is (for validation tables)."""

    def __init__(self, message: str, problem: ImageProblem) -> None:
        super().__init__(message)
        self.problem: ImageProblem = problem


def native_size(model_id: str) -> int | None:
    """The vision encoder's input side for a model id, or None when unknown.

    Example:
        >>> native_size("google/medgemma-4b-it")
        896
    """
    lowered = model_id.lower()
    for family, side in MODEL_IMAGE_SIZES.items():
        if family in lowered:
            return side
    return None


def _read(ref: ImageRef) -> bytes:
    try:
        data = ref.read_bytes()
    except ImageLoadError as exc:
        raise _ImageProblemError(str(exc), "missing") from exc
    if not data:
        raise _ImageProblemError(f"image {ref.name} is empty (0 bytes)", "empty")
    return data


def _open(
    data: bytes, name: str, *, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, list[str]]:
    """Decode fully and normalise to RGB; returns the image and what was normalised."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1× and 2× its pixel limit; treat both as the error
            # it is, so a 30,000 × 30,000 scan is refused before it takes all memory. Other
            # decoder warnings ("Corrupt EXIF data") are noise here: the pixels decide.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if draft is not None and image.format == "JPEG":
                # JPEG can decode at 1/2..1/8 scale; the whole stream is still read, so
                # truncation is still caught.
                image.draft("RGB", draft)
            image.load()
        notes: list[str] = []
        transposed = ImageOps.exif_transpose(image)
        if transposed is not None and transposed is not image:
            orientation = image.getexif().get(0x0112)
            if orientation not in (None, 1):
                notes.append(f"EXIF orientation {orientation} applied")
            image = transposed
        image, converted = _to_rgb(image)
        if converted:
            notes.append(f"{converted} converted to RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblemError(
            f"image {name} is larger than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS} pixels): {exc}; shrink it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
            "decompression_bomb",
        ) from exc
    except UnidentifiedImageError as exc:
        raise _ImageProblemError(
            f"{name} is not a readable image (the content is not a known image format)",
            "not_an_image",
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _ImageProblemError(
            f"image {name} is corrupt or truncated: {exc}", "truncated"
        ) from exc
    return image, notes


def load_image(ref: ImageRef, *, max_side: int | None = None) -> Image.Image:
    """Decode `ref` into an RGB PIL image, EXIF orientation applied.

    CMYK, 16-bit, palette and transparent images become plain RGB (transparency on white,
    16-bit rescaled over its actual range).

    Args:
        ref: A local file or in-memory image.
        max_side: Shrink (never enlarge) so the longer side is at most this many pixels,
            e.g. `native_size(model_id)`.

    Raises:
        ImageLoadError: Missing, empty, not an image, truncated, or larger than Pillow's
            decompression-bomb limit; the message names the image.
    """
    data = _read(ref)
    draft = (max_side, max_side) if max_side is not None else None
    image, _ = _open(data, ref.name, draft=draft)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """The image as RGB, and a description of the conversion (None when it was RGB)."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as on a printed page, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background, f"{mode} with alpha (flattened on white)"
    if mode.startswith(("I;16", "I", "F")):
        # 16/32-bit greyscale: scale the actual range to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB"), f"{mode} (high bit depth)"
    if mode == "P":
        return image.convert("RGB"), "palette (P)"
    return image.convert("RGB"), mode


class ImageInfo(BaseModel):
    """What `inspect_image` found out about one image, without raising.

    Attributes:
        ok: True when the image decodes.
        problem: Why it does not (`missing`, `empty`, `not_an_image`, `truncated`,
            `decompression_bomb`), or None.
        message: The problem in words, naming the image.
        format: The container format Pillow saw (JPEG, PNG, …).
        mode: The pixel mode in the file (RGB, CMYK, I;16, P, RGBA, …).
        width: Pixel width as stored (before EXIF rotation).
        height: Pixel height as stored.
        normalised: What loading changed to give plain RGB (mode conversion, EXIF rotation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    problem: ImageProblem | None = None
    message: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    normalised: tuple[str, ...] = ()


def inspect_image(ref: ImageRef, *, decode: bool = True) -> ImageInfo:
    """Check one image for pre-flight validation; never raises.

    Args:
        ref: A local file or in-memory image (remote ones are reported as not checked by
            the caller; here they count as `missing`).
        decode: Decode the pixels (catches truncation); JPEGs are decoded at reduced scale,
            so this costs a few milliseconds per scan.

    Returns:
        The image's format, mode and size, and its problem or what loading normalises.
    """
    try:
        data = _read(ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                header = Image.open(io.BytesIO(data))
            except UnidentifiedImageError as exc:
                raise _ImageProblemError(
                    f"{ref.name} is not a readable image (the content is not a known image format)",
                    "not_an_image",
                ) from exc
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                header = None  # _open below reports it with the full message
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise _ImageProblemError(
                    f"image {ref.name} is corrupt or truncated: {exc}", "truncated"
                ) from exc
        fmt, mode, size = (
            (header.format, header.mode, header.size) if header else (None, None, None)
        )
        notes: list[str] = []
        if decode or header is None:
            _, notes = _open(data, ref.name, draft=(256, 256))
        elif mode not in (None, "RGB"):
            notes = [f"{mode} converted to RGB"]
    except _ImageProblemError as exc:
        return ImageInfo(ok=False, problem=exc.problem, message=str(exc))
    return ImageInfo(
        ok=True,
        format=fmt,
        mode=mode,
        width=size[0] if size else None,
        height=size[1] if size else None,
        normalised=tuple(notes),
    )


def encode_image(
    ref: ImageRef, *, max_side: int | None = None, image_format: str = "JPEG", quality: int = 95
) -> tuple[bytes, str]:
    """Encoded bytes and their media type, re-encoded only when needed.

    Upright JPEG and PNG files within `max_side` are passed through byte for byte (no
    decoding); anything else (other formats, larger, or EXIF-rotated) is decoded, normalised
    and re-encoded as `image_format`.

    Raises:
        ImageLoadError: The image cannot be read or decoded.
    """
    media_type = ref.resolved_media_type
    if media_type in ("image/jpeg", "image/png"):
        data = _read(ref)
        if _fits(data, max_side):
            return data, media_type
    image = load_image(ref, max_side=max_side)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue(), f"image/{image_format.lower()}"


def _fits(data: bytes, max_side: int | None) -> bool:
    """Whether an encoded image can be sent as it is (reads only the header and the end)."""
    if not _complete(data):
        return False  # decode it instead, so a truncated file is refused, not sent
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("RGB", "L"):
                return False  # CMYK, 16-bit, palette and alpha are normalised to RGB first
            orientation = image.getexif().get(0x0112)
            # A rotated photo must be re-encoded upright: back-ends ignore EXIF.
            small_enough = max_side is None or max(image.size) <= max_side
            return small_enough and orientation in (None, 1)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _complete(data: bytes) -> bool:
    """Whether a JPEG or PNG stream has its end marker (a cut-off download has not)."""
    if data.startswith(b"\xff\xd8"):
        return data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")
    if data.startswith(b"\x89PNG"):
        return b"IEND" in data[-16:]
    return True


def to_data_url(ref: ImageRef, *, max_side: int | None = None) -> str:
    """A base64 `data:` URL for OpenAI-style `image_url` parts.

    URLs are passed through unchanged (the server fetches them).

    Raises:
        ImageLoadError: A local or in-memory image cannot be read or decoded.
    """
    if ref.url is not None:
        return ref.url
    data, media_type = encode_image(ref, max_side=max_side)
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

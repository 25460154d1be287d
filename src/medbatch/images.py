"""One place that turns an `ImageRef` into what a back-end wants.

```
ImageRef ──load_image──▶ PIL RGB (EXIF orientation applied, CMYK/16-bit/palette/alpha → RGB,
   │                               optional shrink to the model's native size)
   ├──encode_image──▶ (JPEG/PNG bytes, media type)     passed through when already fine
   ├──to_data_url───▶ "data:image/jpeg;base64,…"       OpenAI-style image_url parts
   ├──inspect_image─▶ ImageInfo                        pre-flight: what is wrong or normalised
   ├──thumbnail─────▶ small PIL RGB                    report previews, never full-size RGB
   └──check_pixels──▶ None or ImageLoadError           header only; the pipeline's check
```

Every path opens the header first and compares width × height with `pixel_limit()`
(Pillow's `MAX_IMAGE_PIXELS`, read, never set), so a decompression bomb is refused the same
way whether it would be decoded, re-encoded or sent unchanged. Nothing here touches
process-wide state: no `warnings` filters (swapping them from several threads at once
corrupts them for the whole process), no Pillow globals.

Every failure is an `ImageLoadError` whose message names the image and the problem (empty,
not an image, truncated, decompression bomb); inside a run it becomes that record's
`RecordError`, and the other records go on.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict

from medbatch.errors import ImageLoadError
from medbatch.records import ImageRef

__all__ = [
    "ImageInfo",
    "ImageProblem",
    "check_pixels",
    "encode_image",
    "inspect_image",
    "load_image",
    "native_size",
    "pixel_limit",
    "thumbnail",
    "to_data_url",
]


def __getattr__(name: str) -> Any:
    # `MODEL_IMAGE_SIZES` moved into the model profiles (`ModelProfile.image_size`).
    if name == "MODEL_IMAGE_SIZES":
        import warnings

        warnings.warn(
            "medbatch.images.MODEL_IMAGE_SIZES is deprecated: the native image size is "
            "ModelProfile.image_size (medbatch.profiles.profile_for(model_id).image_size)",
            DeprecationWarning,
            stacklevel=2,
        )
        from medbatch.profiles import GEMMA3, PALIGEMMA

        return {
            "gemma-3": GEMMA3.image_size,
            "medgemma": GEMMA3.image_size,
            "paligemma": PALIGEMMA.image_size,
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ImageProblem = Literal["missing", "empty", "not_an_image", "truncated", "decompression_bomb"]


class _ImageProblemError(ImageLoadError):
    """An `ImageLoadError` that also says which problem it is (for validation tables)."""

    def __init__(self, message: str, problem: ImageProblem) -> None:
        super().__init__(message)
        self.problem: ImageProblem = problem


def native_size(model_id: str) -> int | None:
    """The vision encoder's input side for a model id, or None when unknown.

    Reads the model's profile (`medbatch.profiles.profile_for(model_id).image_size`), the
    one place that records it.

    Example:
        >>> native_size("google/medgemma-4b-it")
        896
    """
    from medbatch.profiles import profile_for

    return profile_for(model_id).image_size


def _read(ref: ImageRef) -> bytes:
    try:
        data = ref.read_bytes()
    except ImageLoadError as exc:
        raise _ImageProblemError(str(exc), "missing") from exc
    if not data:
        raise _ImageProblemError(f"image {ref.name} is empty (0 bytes)", "empty")
    return data


def pixel_limit() -> int | None:
    """The most pixels medbatch decodes or sends: Pillow's `PIL.Image.MAX_IMAGE_PIXELS`.

    Read at each call (never set here), so a caller who trusts their files can raise Pillow's
    limit in their own process; None disables the check, as it does in Pillow.
    """
    return Image.MAX_IMAGE_PIXELS


def _bomb_error(name: str, detail: str) -> _ImageProblemError:
    return _ImageProblemError(
        f"image {name} is larger than the decompression-bomb limit ({detail}); shrink it, "
        "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
        "decompression_bomb",
    )


def _check_pixels(size: tuple[int, int], name: str) -> None:
    """Refuse an image whose header claims more pixels than `pixel_limit()`.

    An explicit comparison instead of a warnings filter: `warnings.catch_warnings` swaps the
    process-wide filter list, and two threads doing it at once leave it changed for good
    (every warning of the host process silenced, or made an error).
    """
    limit = pixel_limit()
    width, height = size
    if limit is not None and width * height > limit:
        raise _bomb_error(name, f"{width}×{height} = {width * height:,} pixels > {limit:,}")


@contextlib.contextmanager
def _problems(name: str) -> Iterator[None]:
    """Turn Pillow's exceptions into `_ImageProblemError`s that name the image."""
    try:
        yield
    except _ImageProblemError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow raises above twice its limit; its warning between once and twice the limit
        # arrives here only where the host's own filters make warnings errors. Either way
        # it is the same refusal as `_check_pixels`.
        raise _bomb_error(name, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _ImageProblemError(
            f"{name} is not a readable image (the content is not a known image format)",
            "not_an_image",
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError, Warning) as exc:
        # `Warning`: a decoder warning the host's filters turned into an exception.
        raise _ImageProblemError(
            f"image {name} is corrupt or truncated: {exc}", "truncated"
        ) from exc


def _header(data: bytes, name: str) -> Image.Image:
    """Open (header only) and check the pixel count: the one check every path goes through."""
    with _problems(name):
        image = Image.open(io.BytesIO(data))
    _check_pixels(image.size, name)
    return image


def _upright(image: Image.Image) -> tuple[Image.Image, int | None]:
    """The image with its EXIF orientation applied, and that orientation (None if upright)."""
    try:
        orientation = image.getexif().get(0x0112)
        if orientation in (None, 1):
            return image, None  # exif_transpose would return a full-size copy
        transposed = ImageOps.exif_transpose(image)
    except Warning:
        return image, None  # corrupt EXIF the host's filters made an error: keep the pixels
    return (image, None) if transposed is None else (transposed, orientation)


def _open(
    data: bytes, name: str, *, draft: tuple[int, int] | None = None
) -> tuple[Image.Image, list[str]]:
    """Decode fully and normalise to RGB; returns the image and what was normalised."""
    image = _header(data, name)
    notes: list[str] = []
    with _problems(name):
        if draft is not None and image.format == "JPEG":
            # JPEG can decode at 1/2..1/8 scale; the whole stream is still read, so
            # truncation is still caught.
            image.draft("RGB", draft)
        image.load()
        image, orientation = _upright(image)
        if orientation is not None:
            notes.append(f"EXIF orientation {orientation} applied")
        image, converted = _to_rgb(image)
        if converted:
            notes.append(f"{converted} converted to RGB")
    return image, notes


# Modes Pillow can shrink as they are; I;16 cannot, so it is converted first.
_SHRINKABLE = frozenset({"1", "L", "P", "PA", "LA", "RGB", "RGBA", "CMYK", "I", "F"})


def thumbnail(ref: ImageRef, side: int) -> Image.Image:
    """A small upright RGB preview of `ref`, at most `side` pixels on its longer side.

    Cheap on big scans: an image over `pixel_limit()` is refused before decoding, a JPEG is
    decoded at reduced scale (`draft`), and other formats are shrunk in their own mode
    (`thumbnail` reduces by whole factors first) before the RGB conversion, so no full-size
    RGB copy is ever made.

    Raises:
        ImageLoadError: Missing, empty, not an image, truncated, or over the pixel limit.
    """
    data = _read(ref)
    image = _header(data, ref.name)
    with _problems(ref.name):
        if image.format == "JPEG":
            image.draft("RGB", (side, side))
        image.load()
        if image.mode in _SHRINKABLE:
            image.thumbnail((side, side))
        image, _ = _upright(image)
        image, _ = _to_rgb(image)
        image.thumbnail((side, side))
    return image


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
        header = _header(data, ref.name)
        fmt, mode, size = header.format, header.mode, header.size
        notes: list[str] = []
        if decode:
            _, notes = _open(data, ref.name, draft=(256, 256))
        elif mode != "RGB":
            notes = [f"{mode} converted to RGB"]
    except _ImageProblemError as exc:
        return ImageInfo(ok=False, problem=exc.problem, message=str(exc))
    return ImageInfo(
        ok=True,
        format=fmt,
        mode=mode,
        width=size[0],
        height=size[1],
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
        if _fits(data, ref.name, max_side):
            return data, media_type
    image = load_image(ref, max_side=max_side)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue(), f"image/{image_format.lower()}"


def _fits(data: bytes, name: str, max_side: int | None) -> bool:
    """Whether an encoded image can be sent as it is (reads only the header and the end).

    Raises:
        ImageLoadError: Over the pixel limit (or not an image): bytes sent unchanged get
            the same check as decoded ones.
    """
    image = _header(data, name)
    if not _complete(data):
        return False  # decode it instead, so a truncated file is refused, not sent
    if image.mode not in ("RGB", "L"):
        return False  # CMYK, 16-bit, palette and alpha are normalised to RGB first
    try:
        orientation = image.getexif().get(0x0112)
    except (OSError, ValueError, Warning):
        return False  # unreadable EXIF: decoding decides
    # A rotated photo must be re-encoded upright: back-ends ignore EXIF.
    small_enough = max_side is None or max(image.size) <= max_side
    return small_enough and orientation in (None, 1)


def check_pixels(ref: ImageRef) -> None:
    """Refuse an image over `pixel_limit()`, reading only its header.

    Local files, in-memory bytes and `data:` URLs are checked; http(s) URLs and stage paths
    are not read here. Content Pillow cannot open passes: whether it is usable is for the
    back-end to say (a custom runner may take formats Pillow does not know).

    Raises:
        ImageLoadError: The image is over the limit (`decompression_bomb`), naming it.
    """
    if ref.path is not None:
        source: Path | io.BytesIO = ref.path
    elif ref.data is not None:
        source = io.BytesIO(ref.data)
    elif ref.url is not None and ref.url.startswith("data:"):
        source = io.BytesIO(_data_url_bytes(ref.url))
    else:
        return
    try:
        with Image.open(source) as image:
            size = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(ref.name, str(exc)) from exc
    except (OSError, ValueError, SyntaxError, EOFError, Warning):
        return
    _check_pixels(size, ref.name)


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except ValueError:
            return b""
    return b""


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
        check_pixels(ref)  # a data: URL carries bytes like a file does
        return ref.url
    data, media_type = encode_image(ref, max_side=max_side)
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

"""One place that turns an `ImageRef` into what a back-end wants.

PIL image, encoded bytes, a base64 data URL or a stage path, with an optional resize to the
model's native resolution (896 px for Gemma 3 / MedGemma) so fewer bytes travel.
"""

from __future__ import annotations

import base64
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from medbatch.errors import ImageLoadError
from medbatch.records import ImageRef

__all__ = ["encode_image", "load_image", "to_data_url"]


def load_image(ref: ImageRef, *, max_side: int | None = None) -> Image.Image:
    """Decode `ref` into an RGB PIL image, EXIF orientation applied.

    Args:
        ref: A local file or in-memory image.
        max_side: Shrink (never enlarge) so the longer side is at most this many pixels.

    Raises:
        ImageLoadError: Unreadable, truncated, not an image, or larger than Pillow's
            decompression-bomb limit.
    """
    data = ref.read_bytes()
    if not data:
        raise ImageLoadError(f"image {ref.name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            image.load()
        image = ImageOps.exif_transpose(image) or image
        image = _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(
            f"image {ref.name} is larger than Pillow's decompression-bomb limit: {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{ref.name} is not a readable image") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"image {ref.name} is corrupt or truncated: {exc}") from exc
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as on a printed page, not black.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale the actual range to 8 bits instead of clipping at 255.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def encode_image(
    ref: ImageRef, *, max_side: int | None = None, image_format: str = "JPEG", quality: int = 95
) -> tuple[bytes, str]:
    """Encoded bytes and their media type, re-encoded only when needed.

    JPEG and PNG files within `max_side` are passed through byte for byte; anything else is
    decoded (which also validates it) and re-encoded as `image_format`.
    """
    media_type = ref.resolved_media_type
    if max_side is None and media_type in ("image/jpeg", "image/png"):
        data = ref.read_bytes()
        if data:
            return data, media_type
    image = load_image(ref, max_side=max_side)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue(), f"image/{image_format.lower()}"


def to_data_url(ref: ImageRef, *, max_side: int | None = None) -> str:
    """A base64 `data:` URL for OpenAI-style `image_url` parts.

    URLs are passed through unchanged (the server fetches them).
    """
    if ref.url is not None:
        return ref.url
    data, media_type = encode_image(ref, max_side=max_side)
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

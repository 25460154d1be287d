"""`ImageRef`: where an image is (file, URL, stage path or bytes) and its content hash.

Part of the value types of `medbatch.records` (which re-exports it); like them it imports
only the foundation (`errors`, `files`), never a stage of a run.
"""

from __future__ import annotations

import hashlib
import mimetypes
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medbatch.errors import ImageLoadError
from medbatch.files import sha256_file

if sys.version_info >= (3, 11):
    from typing import Self
else:  # Python 3.10
    from typing_extensions import Self

__all__ = ["ImageRef"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageRef(BaseModel):
    """Where an image is: a local file, a URL, a Snowflake stage path or bytes in memory.

    Exactly one location is set. Loading is lazy: a dataset of 100,000 images holds 100,000
    small references, never the pixels. `sha256` is computed on first use from the content
    (local files and bytes) or taken from `checksum` (remote images whose content we do not
    read, e.g. a stage listing's digest).

    Example:
        >>> ref = ImageRef.from_bytes(b"\\x89PNG...", media_type="image/png")
        >>> len(ref.sha256)
        64
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    url: str | None = None
    stage_path: str | None = None
    data: bytes | None = Field(default=None, repr=False)
    media_type: str | None = None
    checksum: str | None = Field(
        default=None, description="Known content digest for remote images (not read locally)."
    )

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        # Runs whenever a message part holds the reference (every record): the common case
        # is counted without building the list the error message needs.
        locations = (self.path, self.url, self.stage_path, self.data)
        if locations.count(None) == 3:
            return self
        set_fields = [
            name
            for name in ("path", "url", "stage_path", "data")
            if getattr(self, name) is not None
        ]
        if len(set_fields) != 1:
            raise ValueError(
                "an ImageRef needs exactly one of path, url, stage_path or data "
                f"(got {', '.join(set_fields) or 'none'})"
            )
        return self

    @classmethod
    def from_path(cls, path: str | Path) -> ImageRef:
        """Reference a local image file."""
        return cls(path=Path(path))

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> ImageRef:
        """Hold an encoded image (JPEG, PNG, ...) in memory."""
        return cls(data=data, media_type=media_type)

    @classmethod
    def from_url(cls, url: str) -> ImageRef:
        """Reference an image by http(s) or data URL; it is passed on, not downloaded."""
        return cls(url=url)

    @classmethod
    def from_stage(cls, stage_path: str, checksum: str | None = None) -> ImageRef:
        """Reference an image on a Snowflake stage, e.g. `@DB.SCHEMA.STAGE/normal/1.jpg`."""
        return cls(stage_path=stage_path, checksum=checksum)

    @property
    def kind(self) -> Literal["path", "url", "stage", "bytes"]:
        """Which location this reference holds."""
        if self.path is not None:
            return "path"
        if self.url is not None:
            return "url"
        if self.stage_path is not None:
            return "stage"
        return "bytes"

    @property
    def name(self) -> str:
        """A short display name: the file name, or `<bytes>`."""
        location = self.path or self.url or self.stage_path
        if location is None:
            return "<bytes>"
        return str(location).rstrip("/").rsplit("/", 1)[-1]

    @cached_property
    def resolved_media_type(self) -> str:
        """The media type: as given, else guessed from the name, else sniffed from bytes."""
        if self.media_type:
            return self.media_type
        guessed, _ = mimetypes.guess_type(self.name)
        if guessed:
            return guessed
        if self.data is not None:
            return _sniff_media_type(self.data[:16])
        return "application/octet-stream"

    def read_bytes(self) -> bytes:
        """Read the encoded image.

        Raises:
            ImageLoadError: The file is missing or unreadable, or the image is remote (URLs
                and stage paths are passed to back-ends by reference, not downloaded here).
        """
        if self.data is not None:
            return self.data
        if self.path is not None:
            try:
                return self.path.read_bytes()
            except OSError as exc:
                raise ImageLoadError(f"cannot read image file {self.path}: {exc}") from exc
        raise ImageLoadError(
            f"image {self.url or self.stage_path} is remote; medbatch does not download it"
        )

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the image content (or a digest of the location if remote).

        Raises:
            ImageLoadError: A local file cannot be read.
        """
        if self.data is not None:
            return _sha256(self.data)
        if self.path is not None:
            try:
                return sha256_file(self.path)
            except OSError as exc:
                raise ImageLoadError(f"cannot read image file {self.path}: {exc}") from exc
        if self.checksum:
            return self.checksum
        # Remote content is not read; identify it by where it is, prefixed so it can never
        # collide with a content digest.
        return "loc:" + _sha256(str(self.url or self.stage_path).encode())


_MAGIC_NUMBERS = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG", "image/png"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def _sniff_media_type(head: bytes) -> str:
    for magic, media_type in _MAGIC_NUMBERS:
        if head.startswith(magic):
            return media_type
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"

"""What a person attaches to `send_message`: images (for the model) and files (for tools).

Both arrive as untrusted JSON. An entry that does not fit is dropped, never an error
(PROTOCOL.md: "fail soft"), so one bad attachment cannot cost the person their message:

- an image is a base64 `data:` URI of a JPEG, PNG, GIF or WebP picture, or an `https` URL.
  Inline images are decoded here and their format is read from their bytes (the declared
  type only has to say `image/...`): the Messages API refuses an image whose bytes do not
  match its media type, and a refused image stored with the message would break every
  later turn of the conversation, which sends it again;
- a file is `{name (1-255 characters), mimeType?, url}` with a `data:` or `https` URL.

The limits the gateway enforces on what remains (how many, how large) are in `Limits`; going
over them is refused with a message saying so, not silently trimmed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

Detail = Literal["low", "high", "auto"]
DETAILS: frozenset[str] = frozenset({"low", "high", "auto"})

MAX_URL_CHARS = 2048  # an https URL (images and files)
MAX_FILE_NAME = 255
MAX_MIME_TYPE = 255

# The formats the Messages API reads, by their first bytes.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
# data:[<media type>][;parameter=value...][;base64],<data>
_DATA_URI = re.compile(
    r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*?)(?P<base64>;base64)?,(?P<data>.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Image:
    """An image for the model: inline bytes (`data`, with their `media_type`) or an https
    `url` the Messages API fetches itself. `detail` is the client's hint, kept as sent
    (Claude has no such setting: see the README)."""

    media_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    detail: Detail | None = None

    @property
    def size(self) -> int:
        """Bytes of an inline image (0 for a linked one: its size is the fetcher's concern)."""
        return len(self.data) if self.data is not None else 0


@dataclass(frozen=True)
class File:
    """A file for the turn's tools, never sent to the model. `url` is a `data:` URI (the
    bytes themselves) or an https URL; `name` is the client's suggestion, not a safe path."""

    name: str
    url: str
    mime_type: str | None = None


@dataclass(frozen=True)
class Limits:
    """What one message may carry (`PARLEY_MAX_IMAGES`, `PARLEY_MAX_IMAGE_BYTES`,
    `PARLEY_MAX_FILES`); 0 turns a limit off."""

    images: int
    image_bytes: int
    files: int

    def problem(self, images: tuple[Image, ...], files: tuple[File, ...]) -> str | None:
        """Why a message's attachments are refused, or None when they fit."""
        if self.images and len(images) > self.images:
            return f"at most {_count(self.images, 'image')} per message"
        for number, image in enumerate(images, 1):
            if self.image_bytes and image.size > self.image_bytes:
                return f"image {number} is larger than {self.image_bytes} bytes"
        if self.files and len(files) > self.files:
            return f"at most {_count(self.files, 'file')} per message"
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def parse_images(value: Any) -> tuple[Image, ...]:
    """The usable images of a `send_message.images` value (None: none). Entries that do
    not fit are dropped; a value that is not a list is refused (ValueError)."""
    return tuple(image for entry in _entries(value, "images") if (image := _image(entry)))


def parse_files(value: Any) -> tuple[File, ...]:
    """The usable files of a `send_message.files` value, as `parse_images` does it."""
    return tuple(file for entry in _entries(value, "files") if (file := _file(entry)))


def _entries(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{field}' must be a list")
    return value


def _image(entry: Any) -> Image | None:
    if not isinstance(entry, dict):
        return None
    url, detail = entry.get("url"), entry.get("detail")
    if not isinstance(url, str) or (detail is not None and detail not in DETAILS):
        return None
    if https_url(url):
        return Image(url=url, detail=detail)
    decoded = _data_uri(url)
    if decoded is None:
        return None
    declared, data = decoded
    media_type = image_format(data)
    if media_type is None or not declared.lower().startswith("image/"):
        return None
    return Image(media_type=media_type, data=data, detail=detail)


def _file(entry: Any) -> File | None:
    if not isinstance(entry, dict):
        return None
    name, url, mime_type = entry.get("name"), entry.get("url"), entry.get("mimeType")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_FILE_NAME or not name.strip():
        return None
    if mime_type is not None and not (
        isinstance(mime_type, str) and 0 < len(mime_type) <= MAX_MIME_TYPE
    ):
        return None
    if not isinstance(url, str) or not (https_url(url) or _data_uri(url) is not None):
        return None
    return File(name=name, url=url, mime_type=mime_type)


def https_url(url: str) -> bool:
    """An absolute https URL with a host, printable ASCII, at most `MAX_URL_CHARS` long."""
    if len(url) > MAX_URL_CHARS or not url.isascii() or not url.isprintable() or " " in url:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() == "https" and bool(host)


def _data_uri(url: str) -> tuple[str, bytes] | None:
    """(declared media type, bytes) of a `data:` URI; None when it is not a valid one.
    Base64 is checked strictly (line breaks aside): a lenient decoder would turn garbage
    into bytes that something downstream then refuses."""
    match = _DATA_URI.match(url)
    if match is None:
        return None
    payload = match["data"]
    if not match["base64"]:
        return match["type"], payload.encode()
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return (match["type"], data) if data else None


def image_format(data: bytes) -> str | None:
    """The media type of a JPEG, PNG, GIF or WebP image, read from its first bytes."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None

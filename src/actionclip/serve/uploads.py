"""A multipart request streamed into a temporary folder: each file part written to disk as it arrives, the text
fields kept, and the whole refused as soon as it grows past the size limit (a ``Content-Length`` over it is refused
before any of the body is read)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

FILE_FIELD = "video"
TEXT_FIELDS = ("labels", "top_k", "views", "templates", "thumbnails")
MAX_TEXT_FIELD_BYTES = 1 << 20  # 1,000 long labels fit with room to spare


class UploadError(ValueError):
    """A request that cannot be read as asked, with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    name: str  # the client's file name, as given (results are reported under it)
    path: Path
    size: int = 0


@dataclass
class Form:
    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _suffix(filename: str) -> str:
    """The file name's extension if it is a plain one (decoding does not need it; it helps a human reading tmp)."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


class _FormWriter:
    """The parser's callbacks: headers of each part, then its data to a file or to a text field."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.form = Form()
        self._header_name, self._header_value = b"", b""
        self._headers: dict[bytes, bytes] = {}
        self._file: BinaryIO | None = None
        self._upload: Upload | None = None
        self._field: str | None = None
        self._text = bytearray()
        self.ended = False  # the closing boundary was read: a body cut short is not taken for a whole one

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._header_name, self._header_value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise UploadError(400, "a multipart part without 'Content-Disposition: form-data; name=...'")
        name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if name != FILE_FIELD:
                raise UploadError(422, f"a file in the field {name!r}: send videos in the field {FILE_FIELD!r}")
            filename = os.path.basename(options[b"filename"].decode("utf-8", "replace").replace("\\", "/")) or "video"
            path = self.folder / f"{len(self.form.files)}{_suffix(filename)}"
            self._upload = Upload(filename, path)
            self._file = open(path, "wb")
            self.form.files.append(self._upload)
            return
        if name == FILE_FIELD:
            raise UploadError(422, f"the field {FILE_FIELD!r} holds text, not a file: send the video as a file upload")
        if name not in TEXT_FIELDS:
            raise UploadError(
                422, f"unknown field {name!r}; the fields are {FILE_FIELD!r} (files), " + ", ".join(repr(f) for f in TEXT_FIELDS)
            )
        if name in self.form.fields:
            raise UploadError(422, f"the field {name!r} is given more than once")
        self._field, self._text = name, bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
            self._upload.size += end - start
            return
        self._text += data[start:end]
        if len(self._text) > MAX_TEXT_FIELD_BYTES:
            raise UploadError(413, f"the field {self._field!r} is over {MAX_TEXT_FIELD_BYTES // 1024} KiB")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            return
        try:
            self.form.fields[self._field] = self._text.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(422, f"the field {self._field!r} is not UTF-8 text") from None

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def read_form(headers, stream: AsyncIterator[bytes], folder: Path, max_bytes: int) -> Form:
    """The request's files (written into ``folder``) and text fields. ``UploadError`` for a request that is not
    ``multipart/form-data``, over ``max_bytes``, or malformed (its closing boundary missing included); the caller removes ``folder`` in every case."""
    content_type, options = parse_options_header(headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(415, f"send the videos as multipart/form-data (a form upload), not {content_type.decode() or 'no content type'}")
    limit = f"the upload is over the limit of {max_bytes / 2**20:g} MB (--max-upload-mb)"
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise UploadError(413, limit)
    writer = _FormWriter(folder)
    parser = MultipartParser(options[b"boundary"], writer.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise UploadError(400, f"malformed multipart body: {error}") from None
    finally:
        writer.close()
    if not writer.ended:
        boundary = options[b"boundary"].decode("latin-1")
        raise UploadError(400, f"malformed multipart body: it ends before its closing boundary --{boundary}-- (a truncated upload?)")
    return writer.form

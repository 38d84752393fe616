"""An extract's bytes as text, read as a stream and never held whole.

A drop can be hundreds of MB (a company's whole training history) arriving on an
instance with 2 GB. Its bytes come from a seekable binary stream: a local file, or a
blob downloaded a chunk at a time (:meth:`shared.storage.AzureBlobStore.blob`). They are
decoded as they are read, checked on the way (a NUL byte means binary content) and
fingerprinted (SHA-256) in the same pass. Reading again from the start, to name the
line of a problem, asks the stream for its bytes again.

The encoding is told from the first bytes (UTF-16, with or without its byte order
mark); any other file is read as UTF-8 and, when some byte of it is not, read again as
cp1252 (Excel's CSV export on Western Windows), after a pass that refuses binary
content, a file pasted together from two encodings, and bytes cp1252 does not have.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import BinaryIO, TextIO, TypeVar

from shared.errors import ExtractError, Problem

T = TypeVar("T")
PIECE = 1 << 20  # bytes read from the stream at once
HEAD = 1 << 20  # characters enough for any header


class Text:
    """The text of one extract, read from ``stream`` (seekable, read from its start).

    Raises
    ------
    ExtractError
        At once when the stream is over ``max_bytes``: nothing is read then.
    """

    def __init__(self, stream: BinaryIO, source: str, max_bytes: int) -> None:
        self.stream, self.source = stream, source
        self.size = stream.seek(0, io.SEEK_END)
        if self.size > max_bytes:
            raise ExtractError(source, [too_big(source, self.size, max_bytes)])
        stream.seek(0)
        self.encoding = _encoding_of(read_up_to(stream, 4096))
        self.sha256: str | None = None  # set by the first pass that reads every byte

    @cached_property
    def declared(self) -> str | None:
        """The delimiter a first line ``sep=;`` declares (Excel's), if it does."""
        with self._open() as text:
            first = text.readline(4096)
        found = _SEP_LINE.match(first)
        return found.group(1) if found else None

    def _open(self) -> TextIO:
        checked = _Checked(self, check_nul=not self.encoding.startswith("utf-16"))
        return io.TextIOWrapper(io.BufferedReader(checked, PIECE), self.encoding, newline="")

    def reader(self) -> TextIO:
        """The text from its start, without a ``sep=`` line (for the CSV parser)."""
        text = self._open()
        if self.declared:
            text.readline()
        return text

    def lines(self) -> Iterator[str]:
        """The lines as csv and pandas count them (``\\r``, ``\\n`` and ``\\r\\n`` end one),
        each with its line break; a ``sep=`` line is blank (it keeps its number)."""
        with self._open() as text:
            for number, line in enumerate(text):
                yield _SEP_LINE.sub("", line, count=1) if number == 0 and self.declared else line

    @cached_property
    def head(self) -> str:
        """The start of the text: enough for the header record (read once)."""
        with self.reader() as text:
            return text.read(HEAD)

    def is_blank(self) -> bool:
        """Whether the text holds nothing but white space."""
        with self._open() as text:
            while piece := text.read(PIECE):
                if not piece.isspace():
                    return False
        return True

    def check_all(self) -> None:
        """Read every byte through the checks: raises what a full read would."""
        with self._open() as text:
            while text.read(PIECE):
                pass

    def decoded(self, read: Callable[[], T]) -> T:
        """``read()``, again as cp1252 if a byte is not UTF-8 (see :meth:`fall_back`)."""
        try:
            return read()
        except UnicodeDecodeError as exc:
            self.fall_back(exc)
        return read()

    def fall_back(self, exc: UnicodeDecodeError) -> None:
        """After a byte the encoding cannot read: read as cp1252 from now on, or raise.

        UTF-16 that does not decode is refused. A file read as UTF-8 is scanned whole
        first: binary content, a mix of UTF-8 and other lines, and bytes cp1252 lacks
        are refused, in that order.
        """
        if self.encoding.startswith("utf-16"):
            label = "UTF-16" if self.encoding == "utf-16" else self.encoding.upper()
            message = f"unreadable {label}: {exc.reason}"
            raise ExtractError(self.source, [Problem(self.source, message)]) from None
        self._refuse_unless_cp1252()
        self.encoding = "cp1252"

    def _refuse_unless_cp1252(self) -> None:
        not_utf8: int | None = None  # the first line with a byte that is not UTF-8
        utf8_line: int | None = None  # the first line that is UTF-8 and not ASCII
        not_cp1252: tuple[int, int] | None = None  # (line, byte) of the first
        offset, line = 0, 1
        pending = bytearray()  # the line not finished yet (no piece is joined twice)
        self.stream.seek(0)
        while piece := self.stream.read(PIECE):
            nul = piece.find(b"\x00")
            if nul >= 0:
                _refuse_binary(self.source, offset + nul, line + piece[:nul].count(b"\n"))
            if not_cp1252 is None:
                try:
                    piece.decode("cp1252")
                except UnicodeDecodeError as bad:
                    at = line + piece[: bad.start].count(b"\n")
                    not_cp1252 = (at, piece[bad.start])
            pending += piece
            offset += len(piece)
            if b"\n" not in piece:
                continue
            end = pending.rfind(b"\n") + 1
            lines = bytes(pending[:end])
            del pending[:end]
            if lines.isascii():
                line += lines.count(b"\n")
                continue
            for found in _BYTE_LINE.finditer(lines):
                not_utf8, utf8_line = _classify(found.group(), line, not_utf8, utf8_line)
                line += 1
        if pending:
            not_utf8, utf8_line = _classify(bytes(pending), line, not_utf8, utf8_line)
        if not_utf8 is not None and utf8_line is not None:
            message = (
                f"mixed encodings: line {utf8_line} is UTF-8 but line {not_utf8} is not "
                "(save the whole file in one encoding, preferably UTF-8)"
            )
            raise ExtractError(self.source, [Problem(self.source, message, not_utf8)])
        if not_cp1252 is not None:
            at, byte = not_cp1252
            message = f"unreadable encoding: neither UTF-8 nor cp1252 (byte {byte:#04x})"
            raise ExtractError(self.source, [Problem(self.source, message, at)])


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or up to the end: a raw stream may give fewer a read."""
    pieces, got = [], 0
    while got < size and (piece := stream.read(size - got)):
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


def too_big(source: str, size: int, max_bytes: int) -> Problem:
    return Problem(source, f"the file has {size} bytes, over the limit of {max_bytes}")


_SEP_LINE = re.compile(r'"?sep=([^\r\n])"?[ \t]*(?=\r|\n|$)')
_BYTE_LINE = re.compile(rb"[^\n]*\n")


def _classify(
    line_bytes: bytes, line: int, not_utf8: int | None, utf8_line: int | None
) -> tuple[int | None, int | None]:
    """Update (first line not UTF-8, first UTF-8 line that is not ASCII) with line ``line``."""
    if line_bytes.isascii():
        return not_utf8, utf8_line
    try:
        line_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return (line if not_utf8 is None else not_utf8), utf8_line
    return not_utf8, (line if utf8_line is None else utf8_line)


def _refuse_binary(source: str, offset: int, line: int) -> None:
    message = f"binary content, not a CSV file (NUL byte at offset {offset})"
    raise ExtractError(source, [Problem(source, message, line)])


def _encoding_of(start: bytes) -> str:
    """The encoding the first bytes tell, else UTF-8 (checked as the rest is read)."""
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        return "utf-16"
    # Excel's "Unicode text" saved by a tool that drops the byte order mark: every
    # other byte of a Latin text is 0.
    if len(start) >= 4:
        even, odd = start[0::2], start[1::2]
        if odd.count(0) >= 0.9 * len(odd) and even.count(0) <= 0.1 * len(even):
            return "utf-16-le"
        if even.count(0) >= 0.9 * len(even) and odd.count(0) <= 0.1 * len(odd):
            return "utf-16-be"
    return "utf-8-sig"


class _Checked(io.RawIOBase):
    """The bytes of a :class:`Text`'s stream from its start, checked and fingerprinted.

    Several may read the same stream in turn (a parse, then the lines of a problem):
    each keeps its own position.
    """

    def __init__(self, text: Text, *, check_nul: bool) -> None:
        self.text, self.check_nul = text, check_nul
        self.position = self.line = 0
        self.digest: hashlib._Hash | None = hashlib.sha256() if text.sha256 is None else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        stream = self.text.stream
        stream.seek(self.position)
        piece = stream.read(len(buffer))
        if self.check_nul:
            nul = piece.find(b"\x00")
            if nul >= 0:
                _refuse_binary(
                    self.text.source, self.position + nul, self.line + 1 + piece[:nul].count(b"\n")
                )
            self.line += piece.count(b"\n")
        if self.digest is not None:
            self.digest.update(piece)
            if not piece and self.text.sha256 is None:
                self.text.sha256 = self.digest.hexdigest()
        self.position += len(piece)
        buffer[: len(piece)] = piece
        return len(piece)

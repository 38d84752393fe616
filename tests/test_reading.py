"""An extract's bytes read as a stream: the size refused unread, the encoding told, the
fingerprint taken in the same pass, and what a whole read would refuse still refused."""

from __future__ import annotations

import codecs
import hashlib
import io

import pytest

from shared.errors import ExtractError
from shared.reading import PIECE, Text
from shared.schema import read_table


class Unreadable(io.BytesIO):
    """Knows its size; any read fails."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("read")


def test_a_stream_over_the_size_limit_is_refused_without_a_read() -> None:
    with pytest.raises(ExtractError, match="the file has 5000 bytes, over the limit of 4000"):
        Text(Unreadable(b"x" * 5000), "big.csv", max_bytes=4000)


def test_the_fingerprint_is_taken_in_the_parse_pass() -> None:
    data = b"User-Id,ou\n" + b"".join(b"%06d,sales\n" % i for i in range(200_000))
    assert len(data) > 2 * PIECE  # several pieces
    table = read_table(io.BytesIO(data), "users.csv")
    assert table.text.sha256 == hashlib.sha256(data).hexdigest()
    assert len(table.frame) == 200_000


def test_a_byte_that_is_not_utf8_far_in_reads_the_whole_file_as_cp1252() -> None:
    rows = b"".join(b"%06d,sales\n" % i for i in range(300_000))  # past the first pieces
    data = b"User-Id,ou\n" + rows + b"999999,R\xe9seau\n"
    table = read_table(io.BytesIO(data), "users.csv")
    assert table.text.encoding == "cp1252"
    assert table.frame["ou"].iloc[-1] == "Réseau"
    assert table.text.sha256 == hashlib.sha256(data).hexdigest()


def test_utf8_and_cp1252_lines_in_one_file_are_refused_with_both_lines() -> None:
    data = "User-Id,ou\n1,Réseau\n".encode() + b"x,y\n" * 100_000 + b"2,R\xe9seau\n"
    with pytest.raises(ExtractError) as info:
        read_table(io.BytesIO(data), "users.csv")
    (problem,) = info.value.problems
    assert problem.message.startswith("mixed encodings: line 2 is UTF-8 but line 100003 is not")
    assert problem.line == 100_003


def test_binary_content_far_in_is_refused_with_its_line_and_offset() -> None:
    head = b"User-Id,ou\n" + b"1,sales\n" * 200_000
    data = head + b"2,\x00\n"
    with pytest.raises(ExtractError) as info:
        read_table(io.BytesIO(data), "users.csv")
    (problem,) = info.value.problems
    assert problem.message == f"binary content, not a CSV file (NUL byte at offset {len(head) + 2})"
    assert problem.line == 200_002


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ("User-Id;ou\n1;a\n".encode("utf-16"), "utf-16"),
        ("User-Id;ou\n1;a\n".encode("utf-16-le"), "utf-16-le"),
        ("User-Id;ou\n1;a\n".encode("utf-16-be"), "utf-16-be"),
        ("\ufeffUser-Id;ou\n1;é\n".encode(), "utf-8-sig"),
    ],
)
def test_the_encoding_is_told_from_the_first_bytes(data: bytes, encoding: str) -> None:
    table = read_table(io.BytesIO(data), "users.csv")
    assert table.text.encoding == encoding
    assert list(table.frame.columns) == ["User-Id", "ou"]


def test_a_sep_line_declares_the_delimiter_and_keeps_its_line_number() -> None:
    text = Text(io.BytesIO(b"sep=|\r\nUser-Id|ou\r\n1|a\r\n"), "users.csv", max_bytes=1000)
    assert text.declared == "|"
    assert list(text.lines()) == ["\r\n", "User-Id|ou\r\n", "1|a\r\n"]


def test_a_file_saved_with_two_byte_order_marks_reads_clean() -> None:
    # A file saved twice by tools adding one each: the decoder drops the first, the
    # CSV parser the second.
    data = codecs.BOM_UTF16_LE + "\ufeffUser-Id,ou\n1,a\n".encode("utf-16-le")
    table = read_table(io.BytesIO(data), "users.csv")
    assert list(table.frame.columns) == ["User-Id", "ou"]

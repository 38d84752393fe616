"""Pointers: read with their ETag, moved only from the ETag they were read with."""

from __future__ import annotations

import json

import pytest

from shared.errors import PreconditionFailedError
from shared.layout import describe_damage, json_bytes, move_pointer, read_pointer
from shared.storage import BlobStore

POINTER = "models/current.json"


def test_a_pointer_not_written_yet_reads_as_empty(store: BlobStore) -> None:
    assert read_pointer(store, POINTER) == ({}, None)


def test_a_pointer_is_created_once_then_moved_from_the_etag_it_was_read_with(
    store: BlobStore,
) -> None:
    move_pointer(store, POINTER, {"version": "v1"}, None)
    with pytest.raises(PreconditionFailedError):  # someone else created it first
        move_pointer(store, POINTER, {"version": "v1-bis"}, None)

    content, etag = read_pointer(store, POINTER)
    assert content == {"version": "v1"} and etag
    move_pointer(store, POINTER, {"version": "v2"}, etag)
    with pytest.raises(PreconditionFailedError):  # moved since it was read
        move_pointer(store, POINTER, {"version": "v3"}, etag)
    assert read_pointer(store, POINTER)[0] == {"version": "v2"}


def test_json_is_indented_with_sorted_keys() -> None:
    data = json_bytes({"b": 1, "a": {"d": 2, "c": 3}})
    assert data.decode() == json.dumps({"a": {"c": 3, "d": 2}, "b": 1}, indent=2)


def test_damage_is_said_plainly_when_the_file_is_no_archive_at_all() -> None:
    error = ValueError("Cannot load file containing pickled data when allow_pickle=False")
    assert describe_damage(b"\x00garbage", error) == "not an .npz archive (damaged or overwritten)"
    assert describe_damage(b"PK\x03\x04rest", error) == str(error)  # a zip: numpy's reason

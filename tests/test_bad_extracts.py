"""Bad extracts: a corpus of malformed HR files dropped through the real use case.

Every input goes through ``world.drop`` (upload + ``accept_extract``, what the blob trigger
runs) onto a store that already serves a model. Each case then checks three things:

- the report: the status, and problems that name the file, the line and the column;
- the quarantine: a rejected drop leaves ``hr-extracts/`` for ``hr-extracts-rejected/``
  with an ``.error.json`` beside it;
- serving: the pointers and the HTTP answers (a known employee, a new one, similar
  trainings) are the same before and after.

The small inputs are files in ``tests/data/bad_extracts/``; the big ones (size, rows,
distinct values) are generated here rather than committed.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from world import csv_bytes, drop, drop_all, small_config, small_data

from shared.api import create_app
from shared.errors import ExtractError
from shared.layout import (
    DROP_CONTAINER,
    EXTRACTS_POINTER,
    MODELS_POINTER,
    RECOMMENDATIONS_POINTER,
    REJECTED_CONTAINER,
    read_pointer,
)
from shared.pipeline import precompute, retrain
from shared.schema import ID, KINDS, parse_extract
from shared.settings import Config, DataContract
from shared.storage import AzureBlobStore, BlobStore, LocalFolderStore

CORPUS = Path(__file__).parent / "data" / "bad_extracts"
# The corpus tests what one file's validation repairs or refuses: a few rows dropped
# over a full store, which the cross-extract checks (tests/test_crosscheck.py) would
# refuse as not fitting the current extracts.
CONFIG = small_config(contract={"checks": {"min_matched_rows": 0.0, "min_kept_ids": 0.0}})
NO_GATE = small_config(gate={"enabled": False})  # retrained on edited extracts
DATA = small_data()
POINTERS = (EXTRACTS_POINTER, MODELS_POINTER, RECOMMENDATIONS_POINTER)

USERS_HEADER = "User-Id,ou,skills,language,grade,career interests"
KNOWN_EMPLOYEE = str(DATA.taken["User-Id"].iloc[0])
TRAINING = str(DATA.trainings["Training-Id"].iloc[0])
NEW_EMPLOYEE = {
    "ou": "development",
    "skills": ["python", "sql"],
    "language": "english",
    "grade": "G3",
    "career interests": "data",
}


# --- the corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """A problem the report must contain: its message matches, at this line and column."""

    pattern: str
    line: int | None
    column: str | None = None


def over_max_bytes() -> bytes:
    return csv_bytes(DATA.users)  # tens of kB, against a limit of 4 kB


def over_max_rows() -> bytes:
    return csv_bytes(DATA.taken)  # thousands of rows, against a limit of 1,000


def free_text_attribute() -> bytes:
    # 10,000 employees with a skill each of their own: free text, not an attribute.
    rows = [f"{i:06d},sales,skill number {i},english,G1,data" for i in range(10_000)]
    return "\n".join([USERS_HEADER, *rows, ""]).encode()


@dataclass(frozen=True)
class Case:
    """One bad input, what it is dropped as, and what the report must say about it."""

    name: str  # a file of the corpus, or the id of a generated input
    kind: str
    statuses: tuple[str, ...]  # the acceptable outcomes
    problems: tuple[Located, ...] = ()
    generate: Callable[[], bytes] | None = None
    limits: tuple[tuple[str, int], ...] = ()  # contract.limits for this drop
    kept_ids: tuple[str, ...] | None = None  # accepted: exactly these ids, as strings
    never_ids: tuple[str, ...] = ()  # accepted: ids that must not become entities
    never_text: str | None = None  # accepted: text no cell may contain (mojibake)

    @property
    def blob_name(self) -> str:
        # HR drops CSV files: a PNG or a zip arrives renamed, under its kind's folder.
        return f"{self.kind}/{Path(self.name).stem}.csv"

    def data(self) -> bytes:
        return self.generate() if self.generate else (CORPUS / self.name).read_bytes()

    def config(self) -> Config:
        if not self.limits:
            return CONFIG
        settings = CONFIG.to_dict()
        settings["contract"]["limits"].update(dict(self.limits))
        return Config.from_dict(settings)


REJECTED = ("rejected",)
ACCEPTED = ("accepted",)
# One list, so the number of bad inputs tried is len(CASES).
CASES = [
    # Cut mid-row: the last row lost fields, which are blank cells (repaired and reported).
    Case(
        "truncated_mid_row.csv",
        "users",
        ACCEPTED,
        (Located("blank cell", 4, "language"), Located("blank cell", 4, "career interests")),
        kept_ids=("000001", "000002", "000003"),
    ),
    # Cut inside a quoted field: the quote opened on line 3 never closes.
    Case("truncated_mid_quote.csv", "trainings", REJECTED, (Located(r"(?i)quote|EOF", 3),)),
    Case("random_bytes.bin", "users", REJECTED, (Located("binary content", 1),)),
    Case("png_image.png", "trainings", REJECTED, (Located("binary content", 3),)),
    Case("zipped_extract.zip", "trainings-taken", REJECTED, (Located("binary content", 1),)),
    # UTF-16-LE without its byte order mark: every other byte is 0, read as UTF-16.
    Case("utf16_without_bom.csv", "users", ACCEPTED, kept_ids=("000001",)),
    Case("html_error_page.html", "users", REJECTED, (Located("2 fields where the header", 3),)),
    Case("zero_bytes.csv", "users", REJECTED, (Located("empty", 1),)),
    Case("header_only.csv", "trainings", REJECTED, (Located("no data rows", 2),)),
    # Two extracts concatenated: the second header is a data row. Dropping it (reported)
    # or rejecting the file are both fine; an employee called "User-Id" is not.
    Case(
        "header_repeated_as_row.csv",
        "users",
        ("accepted", "rejected"),
        (Located(r"(?i)header", 4),),
        never_ids=("User-Id",),
    ),
    Case(
        "header_repeated_as_training.csv",
        "trainings",
        ("accepted", "rejected"),
        (Located(r"(?i)header", 3),),
        never_ids=("Training-Id",),
    ),
    Case("repeated_column.csv", "users", REJECTED, (Located("more than once", 1, "ou"),)),
    # Tab: Excel's "Unicode text" export, detected from the header like , and ;.
    Case("tab_separated.tsv", "users", ACCEPTED, kept_ids=("000001", "000002")),
    # Lone CR line ends: the delimiter is the header's, whatever the cells hold.
    Case(
        "classic_mac_line_endings.csv",
        "users",
        ACCEPTED,
        kept_ids=tuple(f"{i:06d}" for i in range(1, 9)),
    ),
    Case(
        "pipe_separated.csv",
        "users",
        REJECTED,
        (Located("required column is missing", 1, "User-Id"),),
    ),
    # Line 2 is UTF-8, line 3 cp1252: reading it all as cp1252 turns "Café" into "CafÃ©".
    Case(
        "mixed_encodings.csv",
        "trainings",
        ("accepted", "rejected"),
        (Located(r"(?i)encoding", 3),),
        never_text="Ã",
    ),
    Case("leading_zeros_spaces.csv", "users", ACCEPTED, kept_ids=("000001", "000002", "000010")),
    # Excel's quirks, read as Excel wrote them (each repair reported).
    Case(
        "excel_trailing_empty_columns.csv",
        "users",
        ACCEPTED,
        (Located(r"3 empty column\(s\) right of the data ignored", 1),),
        kept_ids=("000001", "000002"),
    ),
    Case(
        "excel_trailing_empty_fields.csv",
        "users",
        ACCEPTED,
        kept_ids=("000001", "000002", "000003"),
    ),
    Case(
        "excel_sep_line.csv",
        "users",
        ACCEPTED,
        (Located("read with the delimiter ';' that its first line declares", 1),),
        kept_ids=("000001", "000002"),
    ),
    Case("utf16_be_without_bom.csv", "users", ACCEPTED, kept_ids=("000001", "000002")),
    Case(
        "excel_header_case_spaces.csv",
        "users",
        ACCEPTED,
        (
            Located(r"column 'user-id' read as 'User-Id'", 1, "User-Id"),
            Located(r"column 'OU' read as 'ou'", 1, "ou"),
            Located(r"'Career  Interests' read as 'career interests'", 1, "career interests"),
        ),
        kept_ids=("000001", "000002"),
    ),
    Case(
        "excel_decimal_ids.csv",
        "users",
        ACCEPTED,
        (Located(r"decimal read as a whole number \('3.0' as '000003'\)", 4, "User-Id"),),
        kept_ids=("000001", "000002", "000003", "000004"),
    ),
    Case(
        "formula_cells.csv",
        "trainings",
        ACCEPTED,
        (Located(r"spreadsheet formula.*\(lines 2, 3, 4, 5\)", 2, "Training Title"),),
    ),
    Case(
        "over_max_bytes",
        "users",
        REJECTED,
        (Located(r"bytes, over the limit of 4096", None),),
        generate=over_max_bytes,
        limits=(("max_bytes", 4096),),
    ),
    Case(
        "over_max_rows",
        "trainings-taken",
        REJECTED,
        (Located(rf"{len(DATA.taken)} rows, over the limit of 1000", 1002),),
        generate=over_max_rows,
        limits=(("max_rows", 1000),),
    ),
    Case(
        "free_text_attribute",
        "users",
        REJECTED,
        (Located("10000 distinct values, over the limit of 5000", 1, "skills"),),
        generate=free_text_attribute,
    ),
]
# The same drops through the Azure store: rejected (empty, binary, over a limit) and accepted.
ON_AZURITE = {"zero_bytes.csv", "png_image.png", "over_max_rows", "formula_cells.csv"}


def case_id(case: Case) -> str:
    return Path(case.name).stem


# --- a store that already serves --------------------------------------------------------


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with a published model and recommendations, trained once."""
    root = tmp_path_factory.mktemp("served") / "store"
    store = LocalFolderStore(root)
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return root


@pytest.fixture
def served_local(served_root: Path, tmp_path: Path) -> LocalFolderStore:
    """A private copy of the served store: each case starts from the same state."""
    return LocalFolderStore(Path(shutil.copytree(served_root, tmp_path / "store")))


@pytest.fixture
def served_azure(served_root: Path, azure_store: AzureBlobStore) -> AzureBlobStore:
    """The served state copied blob by blob into this test's Azurite containers."""
    source = LocalFolderStore(served_root)
    for container in ("extracts", "models", "recommendations"):
        for info in source.list(f"{container}/"):
            azure_store.write(info.path, source.read(info.path))
    return azure_store


def answers(client: TestClient) -> dict[str, Any]:
    """What the intranet apps see: a known employee, a new one, similar trainings."""
    responses = {
        "known": client.get(f"/recommendations/{KNOWN_EMPLOYEE}"),
        "new": client.post("/recommendations", json={"attributes": NEW_EMPLOYEE, "n": 5}),
        "similar": client.get(f"/trainings/{TRAINING}/similar", params={"n": 5}),
        "model": client.get("/model"),
    }
    for name, response in responses.items():
        assert response.status_code == 200, (name, response.text)
    return {name: response.json() for name, response in responses.items()}


def pointers(store: BlobStore) -> dict[str, tuple[dict[str, Any], str | None]]:
    return {path: read_pointer(store, path) for path in POINTERS}


def matches(problem: dict[str, Any], expected: Located) -> bool:
    return (
        re.search(expected.pattern, problem["message"]) is not None
        and problem["line"] == expected.line
        and problem["column"] == expected.column
    )


def drop_and_check(store: BlobStore, case: Case) -> None:
    """Drop one bad input on a serving store; check the report, the quarantine, serving."""
    serving = TestClient(create_app(store, CONFIG))  # an instance that already serves
    before, served = pointers(store), answers(serving)
    data, name = case.data(), case.blob_name
    source = f"{DROP_CONTAINER}/{name}"

    result = drop(store, name, data, case.config())

    assert result.status in case.statuses, result.report
    problems = result.report["problems"]
    for problem in problems:  # every problem names the file it is about
        assert problem["source"] == source
        assert problem["text"].startswith(source)
        assert problem["line"] is None or problem["line"] >= 1
    for expected in case.problems:
        assert any(matches(p, expected) for p in problems), (expected, problems)

    if result.status == "rejected":
        assert problems
        assert result.path == f"{REJECTED_CONTAINER}/{name}"
        assert store.read(result.path) == data  # quarantined as it came
        assert not store.exists(source)  # moved out of the drop zone, not copied
        stem = name.removesuffix(".csv")
        report = json.loads(store.read(f"{REJECTED_CONTAINER}/{stem}.error.json"))
        assert report == result.report
        assert report["status"] == "rejected"
        assert all(p["text"] in report["message"] for p in problems)
        assert pointers(store) == before  # nothing current moved, etags included
    else:
        extracts, _ = read_pointer(store, EXTRACTS_POINTER)
        assert extracts[case.kind]["path"] == result.path
        assert {k: v for k, v in extracts.items() if k != case.kind} == {
            k: v for k, v in before[EXTRACTS_POINTER][0].items() if k != case.kind
        }
        assert store.read(result.path) == data
        stored_report = json.loads(store.read(result.path.removesuffix(".csv") + ".report.json"))
        assert stored_report == result.report
        # Accepting an extract does not change what is served until a precompute runs.
        after = pointers(store)
        assert after[MODELS_POINTER] == before[MODELS_POINTER]
        assert after[RECOMMENDATIONS_POINTER] == before[RECOMMENDATIONS_POINTER]
        frame, _ = parse_extract(case.kind, io.BytesIO(data), case.config().contract, source)
        ids = frame[ID if ID in frame else "user_id"].tolist()
        if case.kept_ids is not None:
            assert ids == list(case.kept_ids)
            assert all(isinstance(i, str) for i in ids)
        assert not set(case.never_ids) & set(ids)
        if case.never_text is not None:
            values = frame.astype(str).to_numpy().ravel()
            assert not [v for v in values if case.never_text in v], frame

    # The same answers from the instance that was serving and from a fresh one.
    assert answers(serving) == served
    assert answers(TestClient(create_app(store, CONFIG))) == served


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_bad_extract_is_reported_quarantined_and_serving_is_unchanged(
    served_local: LocalFolderStore, case: Case
) -> None:
    drop_and_check(served_local, case)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ON_AZURITE], ids=case_id)
def test_a_bad_extract_on_azurite_is_reported_quarantined_and_serving_is_unchanged(
    served_azure: AzureBlobStore, case: Case
) -> None:
    drop_and_check(served_azure, case)


def test_the_corpus_files_are_all_used() -> None:
    # A file added to tests/data/bad_extracts/ without a case would silently test nothing.
    used = {case.name for case in CASES if case.generate is None}
    assert used == {p.name for p in CORPUS.iterdir() if p.name != "README.md"}


@pytest.mark.parametrize("case", [c for c in CASES if "accepted" in c.statuses], ids=case_id)
def test_every_row_of_an_accepted_corpus_file_is_kept_or_dropped_under_a_reason(
    case: Case,
) -> None:
    try:
        _, report = parse_extract(
            case.kind, io.BytesIO(case.data()), case.config().contract, case.name
        )
    except ExtractError:
        return  # accepted or rejected are both fine for this case, and it was rejected
    assert report.rows_read == report.rows_kept + sum(report.dropped.values()), report.dropped


# --- read as a stream: the same outcome as the whole file in memory ---------------------

# What parse_extract made of each case when it read the file whole from bytes (before the
# stream path replaced it), as `parse_outcome` digests it.
PARSED_WHOLE = Path(__file__).parent / "data" / "bad_extracts-parsed.json"


def parse_outcome(
    kind: str, stream: BinaryIO, contract: DataContract, source: str
) -> dict[str, Any]:
    """The problems of a refused file, or a digest of the frame and the report."""
    try:
        frame, report = parse_extract(kind, stream, contract, source)
    except ExtractError as exc:
        return {"error": [p.to_dict() for p in exc.problems]}
    digest = hashlib.sha256()
    for column in frame.columns:
        digest.update(str(column).encode())
        digest.update(str(frame[column].dtype).encode())
        cells = frame[column].astype(object)
        digest.update(pd.util.hash_pandas_object(cells, index=False).to_numpy().tobytes())
    return {"frame": digest.hexdigest(), "rows": len(frame), "report": report.to_dict()}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_case_parses_from_a_stream_as_it_did_from_the_whole_bytes(case: Case) -> None:
    expected = json.loads(PARSED_WHOLE.read_text("utf-8"))[f"{case.kind}:{case.name}"]
    streamed = parse_outcome(case.kind, io.BytesIO(case.data()), case.config().contract, case.name)
    assert json.loads(json.dumps(streamed, default=str)) == expected


class Trickle(io.RawIOBase):
    """A seekable stream that gives at most a few bytes a read: every piece boundary."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.position, self.reads = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.data)}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        limit = self.sizes[self.reads % len(self.sizes)]
        wanted = limit if size is None or size < 0 else min(limit, size)
        piece = self.data[self.position : self.position + wanted]
        self.position += len(piece)
        self.reads += 1
        return piece

    def readinto(self, buffer: Any) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extract=st.sampled_from(KINDS).flatmap(lambda kind: st.tuples(st.just(kind), csv_like(kind))),
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
)
def test_a_stream_read_in_any_pieces_parses_as_one_read_in_a_single_piece(
    extract: tuple[str, bytes], sizes: list[int]
) -> None:
    kind, data = extract
    whole = parse_outcome(kind, io.BytesIO(data), DataContract(), "x.csv")
    trickled = parse_outcome(kind, Trickle(data, sizes), DataContract(), "x.csv")  # type: ignore[arg-type]
    assert trickled == whole


# --- what follows an accepted drop ------------------------------------------------------


def test_ids_with_leading_zeros_and_spaces_keep_serving_the_same_employees(
    served_local: LocalFolderStore,
) -> None:
    # "000042" must stay "000042": read as a number, every employee would become unknown.
    client = TestClient(create_app(served_local, CONFIG))
    served = client.get(f"/recommendations/{KNOWN_EMPLOYEE}").json()
    padded = DATA.users.assign(**{"User-Id": "  " + DATA.users["User-Id"] + " "})
    result = drop(served_local, "users/padded.csv", csv_bytes(padded), CONFIG)
    assert result.status == "accepted"
    assert result.report["problems"] == []

    assert precompute(served_local, CONFIG).status == "computed"  # new data version
    again = client.get(f"/recommendations/{KNOWN_EMPLOYEE}").json()
    assert again["recommendations_version"] != served["recommendations_version"]
    assert again["trainings"] == served["trainings"]


def test_formula_cells_are_accepted_reported_and_neutralized_in_the_csv_export(
    served_local: LocalFolderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Titles and ids a spreadsheet would run: kept as text, exported with a leading "'".
    formulas = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)"]
    trainings, users, taken = DATA.trainings.copy(), DATA.users.copy(), DATA.taken.copy()
    trainings.loc[:3, "Training Title"] = formulas
    renamed_training = str(trainings.loc[4, "Training-Id"])
    trainings.loc[4, "Training-Id"] = "@" + renamed_training
    taken.loc[taken["Training-Id"] == renamed_training, "Training-Id"] = "@" + renamed_training
    users.loc[:3, "User-Id"] = [f"{f[0]}{i}" for i, f in enumerate(["=", "+", "-", "@"])]
    for name, frame in (("trainings", trainings), ("users", users), ("trainings-taken", taken)):
        result = drop(served_local, f"{name}/formulas.csv", csv_bytes(frame), CONFIG)
        assert result.status == "accepted", result.report
        if name != "trainings-taken":
            assert any("spreadsheet formula" in p["message"] for p in result.report["problems"])

    # The card is not what this test is about; rendering it takes most of a small retrain.
    monkeypatch.setattr("shared.pipeline.render_card", lambda _: (b"{}", b"<html></html>"))
    assert retrain(served_local, NO_GATE).status == "published"
    version = read_pointer(served_local, RECOMMENDATIONS_POINTER)[0]["version"]
    raw = served_local.read(f"recommendations/{version}/recommendations.csv").decode()
    export = pd.DataFrame(list(csv.DictReader(io.StringIO(raw))))

    titles = set(export["title"])
    assert {"'" + f for f in formulas} <= titles  # those trainings are recommended to someone
    assert not {t for t in titles if t[:1] in "=+-@"}  # no cell starts like a formula
    assert "'@" + renamed_training in set(export["training_id"])
    assert set(export["employee_id"]) >= {"'=0", "'+1", "'-2", "'@3"}
    for column in ("employee_id", "training_id", "title"):
        assert not export[column].str.match(r"[=+\-@\t\r]").any(), column
    untouched = export[~export["title"].str.startswith("'")]
    assert set(untouched["title"]) <= set(DATA.trainings["Training Title"])


# --- property: parse_extract raises ExtractError or returns, never anything else --------

HEADER_NAMES = [
    "User-Id",
    "Training-Id",
    "Training Title",
    "ou",
    "skills",
    "language",
    "grade",
    "career interests",
    "main skill",
    "category",
    "provider",
    "level",
    "rating",
    "date",
]
TRAININGS_HEADER = "Training-Id,Training Title,main skill,category,provider,language,level"
REAL_HEADERS = {
    kind: header.split(",")
    for kind, header in [
        ("users", USERS_HEADER),
        ("trainings", TRAININGS_HEADER),
        ("trainings-taken", "User-Id,Training-Id,rating,date"),
    ]
}
NASTY = [*",;\t|\"'\r\n =+-@é€ÿ", "\ufeff", "\u2028", "\x85", "\x1a", '""', "\\"]
TIGHT = Config.from_dict(
    {"contract": {"limits": {"max_rows": 3, "max_distinct_values": 2, "max_bytes": 2_000}}}
).contract
# Weighted towards what HR sends; the BOM-less UTF-16 ones read as binary (NUL bytes).
ENCODINGS = [*["utf-8"] * 4, "utf-8-sig", "cp1252", "utf-16", "latin-1", "utf-16-le", "utf-16-be"]

cells = st.one_of(
    st.lists(st.sampled_from([*NASTY, "a", "B", "0", "7", "x y"]), max_size=12).map("".join),
    st.sampled_from(["", " ", "000123", " 007 ", "5", "4,5", "nan", "NULL", "inf", "1e309"]),
    st.sampled_from(HEADER_NAMES),
    st.text(st.characters(exclude_characters="\x00"), max_size=8),  # NUL: see damage
)


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(1, one_in)) == 1


@st.composite
def csv_like(draw: st.DrawFn, kind: str) -> bytes:
    """CSV-ish bytes: a real or random header, ragged rows, odd quoting, encodings, damage.

    Mostly near-valid (a real header, rows of its width), so that the repair paths run
    as often as the fatal ones; each kind of damage is applied now and then.
    """
    if sometimes(draw, 6):
        header = draw(st.lists(st.sampled_from(HEADER_NAMES) | cells, min_size=1, max_size=8))
    else:
        header = draw(st.permutations(REAL_HEADERS[kind]))
    if sometimes(draw, 5):  # a repeated or a missing column
        header = [*header, draw(st.sampled_from(header))] if draw(st.booleans()) else header[1:]
    width = max(len(header), 1)
    row = st.lists(cells, min_size=width, max_size=width)
    ragged = st.lists(cells, min_size=0, max_size=width + 2)
    rows = draw(st.lists(row | ragged if sometimes(draw, 4) else row, min_size=1, max_size=8))
    if sometimes(draw, 5):
        rows.insert(draw(st.integers(0, len(rows))), list(header))  # the header as a row
    if rows and sometimes(draw, 8):  # one cell over csv's field size limit
        rows[-1] = [*rows[-1], "y" * draw(st.integers(131_000, 140_000))]
    # "|" is not a delimiter the contract knows: now and then, so most files can be read.
    delimiter = "|" if sometimes(draw, 20) else draw(st.sampled_from([",", ";", "\t"]))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    quoting = draw(st.sampled_from(["minimal", "minimal", "all", "raw", "broken"]))
    buffer = io.StringIO()
    if quoting in ("minimal", "all"):
        writer = csv.writer(
            buffer,
            delimiter=delimiter,
            lineterminator=end,
            quoting=csv.QUOTE_ALL if quoting == "all" else csv.QUOTE_MINIMAL,
        )
        writer.writerows([header, *rows])
    else:
        for line in [header, *rows]:
            # "broken": every other field opens a quote and never closes it.
            fields = [f'"{c}' if quoting == "broken" and i % 2 else c for i, c in enumerate(line)]
            buffer.write(delimiter.join(fields) + end)
    text = buffer.getvalue()
    if sometimes(draw, 5):
        text = text[: draw(st.integers(0, len(text)))]  # cut anywhere, mid-quote included
    encoding = draw(st.sampled_from(ENCODINGS))
    data = text.encode(encoding, errors="replace")
    if sometimes(draw, 6):
        bom = [codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE]
        data = draw(st.sampled_from(bom)) + data
    if sometimes(draw, 4):
        damage = draw(st.sampled_from([b"\x00", b"\x81\x8d\x8f", b"\xff\xfe", b"\xe9", b"\xc3"]))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + damage + data[at:]
    return data


def check_parse(kind: str, data: bytes, contract: DataContract) -> None:
    source = "hr-extracts/fuzz.csv"
    try:
        frame, report = parse_extract(kind, io.BytesIO(data), contract, source)
    except ExtractError as error:
        event("rejected: " + re.sub(r"[0-9'].*", "", error.problems[0].message)[:30])
        assert error.problems
        for problem in error.problems:
            assert problem.source == source
            assert problem.line is None or problem.line >= 1
            assert str(problem) in str(error)
        return
    event("accepted")
    assert report.kind == kind
    assert len(frame) == report.rows_kept <= report.rows_read
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())  # counts add up
    assert all(p.source == source and (p.line is None or p.line >= 1) for p in report.problems)
    for column in (ID,) if kind != "trainings-taken" else ("user_id", "training_id"):
        ids = frame[column]
        assert all(isinstance(i, str) and i and i == i.strip() for i in ids)
    if kind != "trainings-taken":
        assert frame[ID].is_unique
        assert not frame.isna().any(axis=None)
    else:
        assert not np.isnan(frame["weight"].to_numpy()).any()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extract=st.sampled_from(KINDS).flatmap(
        lambda kind: st.tuples(
            st.just(kind), st.one_of(csv_like(kind), csv_like(kind), st.binary(max_size=2_000))
        )
    ),
    contract=st.sampled_from([DataContract(), DataContract(), TIGHT]),
)
def test_any_csv_like_bytes_parse_or_raise_extract_error(
    extract: tuple[str, bytes], contract: DataContract
) -> None:
    kind, data = extract
    check_parse(kind, data, contract)

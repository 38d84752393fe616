"""The data contract: read and validate the three HR extracts into clean frames.

Every problem is located by file, line and column. Fatal problems (the file cannot
be used at all) are collected and raised together as one :class:`ExtractError`;
repairable ones are repaired (the row or the cell is dropped), counted and listed
in the :class:`ValidationReport`. Identifiers stay strings: ``"00123"`` is not
``"123"``.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import re
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO, Literal, TextIO

import numpy as np
import pandas as pd

from shared.errors import ExtractError, Problem
from shared.ids import DECIMAL_ID, clean_id, id_problem
from shared.reading import Text, read_up_to
from shared.settings import DataContract, EntityColumns, Limits, TakenColumns

Kind = Literal["users", "trainings", "trainings-taken", "roles"]
KINDS: tuple[Kind, ...] = ("users", "trainings", "trainings-taken")  # required
OPTIONAL_KINDS: tuple[Kind, ...] = ("roles",)  # the skill-gap lane's roles and their skills
ALL_KINDS: tuple[Kind, ...] = (*KINDS, *OPTIONAL_KINDS)
ID = "id"  # clean frames name their identifier column this way, whatever the file says
MAX_LINES_LISTED = 10


@dataclass(frozen=True)
class ValidationReport:
    """What validation found and repaired in one extract."""

    source: str
    kind: str
    rows_read: int
    rows_kept: int
    problems: tuple[Problem, ...] = ()  # repairable problems, already repaired
    notes: dict[str, int] = field(default_factory=dict)  # rows kept but set apart, e.g.
    # below min_weight
    # Every row read and not kept, by reason: rows_read = rows_kept + sum(dropped).
    dropped: dict[str, int] = field(default_factory=dict)
    # Of the file's bytes, read in the same pass as its rows (the extracts pointer keeps it).
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "problems": [p.to_dict() for p in self.problems],
            "notes": dict(self.notes),
            "dropped": dict(self.dropped),
        }


@dataclass
class _Table:
    """A parsed CSV: string cells, plus the file line of each record (computed on demand)."""

    source: str
    text: Text  # the file's text, read again from its stream to locate problems
    delimiter: str
    frame: pd.DataFrame
    repairs: list[Problem] = field(default_factory=list)  # how the file was read differently

    @cached_property
    def _record_lines(self) -> np.ndarray:
        # pandas does not keep line numbers: only paid for when reporting, a line at a time.
        records = _records(self.text.lines(), self.delimiter)
        starts = np.fromiter((line for line, _ in records), np.int32)
        return starts[1:]  # the header is not a record

    def line_of(self, position: int) -> int:
        lines = self._record_lines
        return int(lines[position]) if position < len(lines) else position + 2

    def problem(self, positions: np.ndarray, message: str, column: str | None = None) -> Problem:
        """One problem covering the rows at ``positions`` (0-based record positions)."""
        listed = [self.line_of(int(p)) for p in positions[:MAX_LINES_LISTED]]
        if len(positions) > 1:
            more = len(positions) - len(listed)
            tail = f" and {more} more" if more else ""
            message = f"{message} (lines {', '.join(map(str, listed))}{tail})"
        return Problem(self.source, message, listed[0], column, count=len(positions))


def _sniff_delimiter(header: str) -> str:
    # Tab: Excel's "Unicode text" export; otherwise whichever of , and ; the header uses more.
    counts = {delimiter: header.count(delimiter) for delimiter in (",", ";", "\t")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def _records(lines: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each record that pandas reads, the header included.

    csv counts lines as pandas does (quoted newlines, "\\r" and "\\r\\n" ends), but
    pandas also skips lines that hold nothing or only spaces and tabs. A record csv
    cannot read (a field over its size limit) ends the iteration.
    """
    consumed: list[str] = []  # the physical lines of the record being read

    def tracked() -> Iterator[str]:
        for line in lines:
            consumed.append(line)
            yield line

    reader = csv.reader(tracked(), delimiter=delimiter)
    start = 0
    try:
        for record in reader:
            if consumed[0].strip(" \t\r\n"):
                yield start + 1, record
            start = reader.line_num
            consumed.clear()
    except csv.Error:
        return


def read_table(stream: BinaryIO, source: str, limits: Limits | None = None) -> _Table:
    """Parse the CSV bytes of ``stream`` (seekable) into string cells, a piece at a time;
    raise on what cannot be parsed. The file is never held whole (see :mod:`shared.reading`).
    """
    limits = limits or Limits()
    text = Text(stream, source, limits.max_bytes)
    return text.decoded(lambda: _read_table(text, limits))


def _read_table(text: Text, limits: Limits) -> _Table:
    source = text.source
    if text.is_blank():
        raise ExtractError(source, [Problem(source, "the file is empty", 1)])
    header = _first_line(text.head)
    delimiter = text.declared or _sniff_delimiter(header)
    names = _names(header, delimiter)
    while names and not names[-1]:  # Excel keeps empty columns right of the data
        names.pop()
    try:
        frame = _read_csv(text.reader(), delimiter, empty=_names(header, delimiter))
    except UnicodeDecodeError:
        raise  # a ValueError too, but for Text.decoded
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
        text.check_all()  # what a whole read would refuse comes first (binary content)
        padded = _padded(text, delimiter, names)
        if padded is None:
            raise ExtractError(source, _field_count_problems(text, delimiter, exc)) from None
        frame = padded
    if len(frame) > limits.max_rows:
        message = f"the file has {len(frame)} rows, over the limit of {limits.max_rows}"
        raise ExtractError(source, [Problem(source, message, limits.max_rows + 2)])
    repairs = []
    if text.declared:
        message = f"read with the delimiter {text.declared!r} that its first line declares"
        repairs.append(Problem(source, message, 1))
    if len(frame.columns) > len(names) and not _filled(frame, len(names)):
        ignored = len(frame.columns) - len(names)
        message = f"{ignored} empty column(s) right of the data ignored (a spreadsheet's)"
        repairs.append(Problem(source, message, 1))
        frame = frame.iloc[:, : len(names)]
    frame.columns = [str(c).strip() for c in frame.columns]
    return _Table(source, text, delimiter, frame, repairs)


def _first_line(text: str) -> str:
    """The header line, without copying the text (blank lines before it skipped)."""
    start = re.match(r"[ \t\r\n]*", text)
    begin = start.end() if start else 0
    end = re.compile(r"\r|\n").search(text, begin)  # Mac: lone CR
    return text[begin : end.start() if end else len(text)]


def _names(header: str, delimiter: str) -> list[str]:
    """The header's column names, stripped ([] if csv cannot read it: reported later)."""
    try:
        return [n.strip() for n in next(csv.reader([header], delimiter=delimiter), [])]
    except csv.Error:
        return []


def _padded(text: Text, delimiter: str, names: list[str]) -> pd.DataFrame | None:
    """Rows longer than the header, read anyway when what they hold past it is empty
    (Excel pads every row to its widest one); else None."""
    widest = max((len(r) for _, r in _records(text.lines(), delimiter)), default=0)
    padded = [*names, *(f"\x00{i}" for i in range(len(names), widest))]
    try:
        frame = _read_csv(text.reader(), delimiter, padded)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError):
        return None
    return None if _filled(frame, len(names)) else frame


def _filled(frame: pd.DataFrame, width: int) -> bool:
    """Whether any cell right of the first ``width`` columns holds something."""
    return bool((frame.iloc[:, width:] != "").to_numpy().any())


CHUNK_ROWS = 25_000  # rows parsed at once: bounds the cells held as Python strings


def _read_csv(
    reader: TextIO, delimiter: str, names: list[str] | None = None, empty: list[str] | None = None
) -> pd.DataFrame:
    """The cells, under ``names`` (the header row skipped) when given, as categoricals
    over their sorted distinct values; a file without rows has the columns ``empty``.

    Read a chunk at a time, each chunk's cells folded into codes of the distinct values
    seen so far: a column of a million cells is then a million small codes and a few
    thousand strings, not a million string objects (13x the file before, measured).
    """
    codes: dict[str, list[np.ndarray]] = {}
    seen: dict[str, dict[str, int]] = {}
    columns: list[str] = []
    with warnings.catch_warnings():
        # A first row longer than the header is only a warning for pandas, which
        # would then drop cells silently.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        chunks = pd.read_csv(
            reader,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            index_col=False,
            engine="c",
            header=0,
            names=names,
            chunksize=CHUNK_ROWS,
        )
        with reader, chunks:
            for chunk in chunks:
                columns = [str(c) for c in chunk.columns]
                for position, column in enumerate(columns):
                    local, values = pd.factorize(chunk.iloc[:, position].to_numpy(dtype=object))
                    known = seen.setdefault(column, {})
                    into = np.fromiter(
                        (known.setdefault(v, len(known)) for v in values), np.int64, len(values)
                    )
                    codes.setdefault(column, []).append(into[local].astype(np.int32))
    if not codes:  # a header and no row
        header = names or empty or []
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in header})
    # A column's parts are let go as soon as it is built, and the frame takes the
    # columns as they are (no copy).
    built = {column: _sorted_categorical(codes.pop(column), seen.pop(column)) for column in columns}
    return pd.DataFrame(built, columns=columns, copy=False)


def _sorted_categorical(parts: list[np.ndarray], values: dict[str, int]) -> pd.Categorical:
    distinct = np.asarray(list(values), dtype=object)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return pd.Categorical.from_codes(
        rank[np.concatenate(parts)], categories=pd.Index(distinct[order], dtype="str")
    )


def header_of(stream: BinaryIO) -> list[str]:
    """The column names of an extract (stripped), or [] when it cannot be read; read off
    its first 64 KiB, and the stream left where it was."""
    start = stream.tell()
    head = read_up_to(stream, 64 * 1024)
    stream.seek(start)
    try:
        text = Text(io.BytesIO(head), "header", len(head))
        header = _first_line(text.decoded(lambda: text.head))
    except ExtractError:
        return []
    return _names(header, text.declared or _sniff_delimiter(header))


def kinds_with_columns(names: Collection[str], contract: DataContract) -> list[Kind]:
    """The kinds whose required columns a header has."""
    required: dict[Kind, tuple[str | None, ...]] = {
        "users": (contract.users.id, *contract.users.features),
        "trainings": (
            contract.trainings.id,
            contract.trainings.title,
            *contract.trainings.features,
        ),
        "trainings-taken": (contract.taken.user_id, contract.taken.training_id),
        "roles": (contract.roles.id, *contract.roles.features),
    }
    return [
        kind
        for kind, columns in required.items()
        if all(column in names for column in columns if column)
    ]


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def distinct_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of a string column into its distinct values, and those values (objects).

    Extract columns repeat a few values (ids, dates, ratings, attributes): cleaning,
    checks and feature names work once per distinct value, then apply to the cells
    through the codes. A categorical column (see :func:`_strip`) is encoded already:
    only the values some cell still holds are returned (a subset of its rows keeps
    categories nobody in it has).
    """
    if isinstance(values.dtype, pd.CategoricalDtype) and not values.hasnans:
        codes = values.cat.codes.to_numpy()  # int8 to int32: a million rows, no int64 copy
        distinct = values.cat.categories.to_numpy(dtype=object)
        used = np.bincount(codes, minlength=len(distinct)) > 0
        if not used.all():
            codes, distinct = (np.cumsum(used) - 1)[codes], distinct[used]
        return codes, distinct
    codes, distinct = pd.factorize(values.astype(str).to_numpy(dtype=object))
    return codes, np.asarray(distinct, dtype=object)


NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _formula_problems(
    table: _Table, frame: pd.DataFrame, columns: list[str], keep: pd.Series
) -> list[Problem]:
    """Cells a spreadsheet would run as formulas: kept as text, reported, neutralized on export."""
    problems = []
    for name in columns:
        codes, distinct = distinct_codes(frame[name])
        formula = np.array(
            [v.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(v) for v in distinct], dtype=bool
        )
        suspicious = formula[codes] & keep.to_numpy()
        if suspicious.any():
            message = "starts like a spreadsheet formula: kept as text, neutralized in exports"
            problems.append(table.problem(np.flatnonzero(suspicious), message, name))
    return problems


def _distinct_value_problems(
    table: _Table, frame: pd.DataFrame, columns: EntityColumns, delimiter: str, limit: int
) -> list[Problem]:
    problems = []
    for name in columns.features:
        cells: list[str] = distinct_codes(frame[name])[1].tolist()
        if name in columns.multi_valued:
            separator = columns.delimiter_of(name, delimiter)
            cells = [piece for cell in cells for piece in cell.split(separator)]
        distinct = len({value.strip().lower() for value in cells})
        if distinct > limit:
            message = (
                f"{distinct} distinct values, over the limit of {limit}: free text is not an "
                "attribute (raise contract.limits.max_distinct_values if this is intended)"
            )
            problems.append(Problem(table.source, message, 1, name))
    return problems


def _field_count_problems(text: Text, delimiter: str, exc: Exception) -> list[Problem]:
    source = text.source
    header: list[str] | None = None
    problems: list[Problem] = []
    for start, record in _records(text.lines(), delimiter):
        if header is None:
            header = record
        elif len(record) > len(header):
            message = f"{len(record)} fields where the header has {len(header)}"
            problems.append(Problem(source, message, start))
            if len(problems) == MAX_LINES_LISTED:
                break
    if problems:
        return problems
    opened = _unclosed_quote_line(text)
    if opened is not None:
        return [Problem(source, "a quoted field opened here is never closed", opened)]
    return [Problem(source, f"malformed CSV: {exc}")]


def _unclosed_quote_line(text: Text) -> int | None:
    """The line where a quote opens that no later quote closes ("" escapes count twice)."""
    inside, opened = False, None
    for number, line in enumerate(text.lines(), start=1):
        if line.count('"') % 2:
            inside = not inside
            opened = number if inside else None
    return opened if inside else None


def _header_problems(
    table: _Table, required: list[str], renamed: dict[str, str] | None = None
) -> list[Problem]:
    line, raw_header = next(
        _records(io.StringIO(table.text.head, newline=""), table.delimiter), (1, [])
    )
    # The names as read: empty columns right of the data dropped, case repairs applied.
    names = [(renamed or {}).get(h.strip(), h.strip()) for h in raw_header]
    names = names[: len(table.frame.columns)]
    problems = [
        Problem(table.source, "the column appears more than once in the header", line, name)
        for name in sorted({n for n in names if names.count(n) > 1})
    ]
    found = ", ".join(repr(n) for n in names)
    problems += [
        Problem(
            table.source,
            f"required column is missing (found {found}){did_you_mean(name, names)}",
            line,
            name,
        )
        for name in required
        if name not in names
    ]
    return problems


def did_you_mean(name: str, names: list[str]) -> str:
    """``"; the file has 'Weight'"`` when a header is close to a configured name."""
    folded = {n.casefold().replace("_", "-").replace(" ", ""): n for n in names}
    key = name.casefold().replace("_", "-").replace(" ", "")
    close = [folded[key]] if key in folded else difflib.get_close_matches(name, names, 1, 0.8)
    return f"; the file has {close[0]!r}" if close else ""


def _strip(
    frame: pd.DataFrame,
    columns: list[str],
    categorical: Collection[str] = (),
    ids: Collection[str] = (),
) -> pd.DataFrame:
    """The columns with surrounding whitespace removed (each distinct value once); the
    ``ids`` columns also lose their invisible and control characters (see :mod:`shared.ids`).

    Columns named in ``categorical`` come back as categoricals over their sorted
    distinct values: attributes, which the checks here and the feature matrices
    then handle once per value without hashing every cell again.
    """
    stripped = {}
    for column in columns:
        codes, distinct = distinct_codes(frame[column])
        clean = clean_id if column in ids else str.strip
        values = [clean(value) for value in distinct]
        if column in categorical:
            # Stripping can merge values (" a" and "a"): categories must be distinct.
            merged, categories = pd.factorize(np.asarray(values, dtype=object), sort=True)
            original = frame[column]
            if isinstance(original.dtype, pd.CategoricalDtype) and categories.tolist() == (
                original.cat.categories.tolist()
            ):
                stripped[column] = original  # nothing stripped: its codes, not a copy
                continue
            stripped[column] = pd.Series(
                pd.Categorical.from_codes(
                    merged[codes], categories=pd.Index(categories, dtype="str")
                ),
                index=frame.index,
            )
        else:
            stripped[column] = pd.Series(
                pd.array(values, dtype="str").take(codes), index=frame.index
            )
    return pd.DataFrame(stripped, index=frame.index, copy=False)


def positions(
    known: pd.Index | np.ndarray, values: pd.Series | pd.Index | np.ndarray
) -> np.ndarray:
    """Position of each value among the ``known`` ids (the first, if listed twice); -1
    for a value not there.

    The known ids and the values are factorized together: one hash lookup per value,
    cheaper than ``isin`` or ``Index.get_indexer`` over a million interactions.
    """
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        # Each distinct value looked up once, then spread through the codes.
        categorical = pd.Categorical(values)
        of_category = np.append(positions(known, categorical.categories.to_numpy(object)), -1)
        return np.asarray(of_category[categorical.codes], dtype=np.int64)  # code -1 -> -1
    known = np.asarray(known, dtype=object)
    codes, uniques = pd.factorize(np.concatenate([known, np.asarray(values, dtype=object)]))
    position_of_code = np.full(len(uniques), -1, dtype=np.int64)
    position_of_code[codes[: len(known)][::-1]] = np.arange(len(known) - 1, -1, -1)
    return position_of_code[codes[len(known) :]]


def _decimal_ids(table: _Table, frame: pd.DataFrame, column: str) -> list[Problem]:
    """Ids a spreadsheet wrote as decimals (``42.0``) in a file of whole-number ids, read
    as whole numbers, in place (zero-padded when every other id has the same width);
    reported. Left alone when the file's other ids are not whole numbers."""
    codes, distinct = distinct_codes(frame[column])
    values: list[str] = distinct.tolist()
    decimals = {v: found.group(1) for v in values if (found := DECIMAL_ID.match(v))}
    whole = [v for v in values if v.isascii() and v.isdigit()]
    if not decimals or not whole or len(whole) < 0.9 * (len(values) - len(decimals)):
        return []
    widths = {len(v) for v in whole}
    width = widths.pop() if len(widths) == 1 else 0
    repaired = {v: digits.zfill(width) for v, digits in decimals.items()}
    frame[column] = pd.Series(
        pd.array([repaired.get(v, v) for v in values], dtype="str").take(codes), index=frame.index
    )
    rows = np.flatnonzero(np.isin(codes, [i for i, v in enumerate(values) if v in repaired]))
    before, after = next(iter(repaired.items()))
    message = (
        f"identifier written as a decimal read as a whole number ({before!r} as {after!r}): "
        "a spreadsheet stored it as a number"
    )
    return [table.problem(rows, message, column)]


def _blank_id_problem(
    table: _Table, ids: pd.Series, column: str
) -> tuple[pd.Series, list[Problem]]:
    """Rows with a blank id, or one the API could not serve, are dropped and reported."""
    codes, distinct = distinct_codes(ids)
    reasons = ["blank identifier" if not v else (id_problem(v) or "") for v in distinct]
    listed = list(dict.fromkeys(r for r in reasons if r))
    if not listed:  # the usual case: no per-row work
        return pd.Series(True, index=ids.index), []
    # Each distinct id's reason as a small number (0: fine), spread through the codes.
    number = np.asarray([listed.index(r) + 1 if r else 0 for r in reasons], dtype=np.int16)
    why = number[codes]
    problems = [
        table.problem(np.flatnonzero(why == n), f"{reason}: row dropped", column)
        for n, reason in enumerate(listed, start=1)
    ]
    return pd.Series(why == 0, index=ids.index), problems


def _repeated_header(
    table: _Table, frame: pd.DataFrame, keep: pd.Series
) -> tuple[pd.Series, list[Problem]]:
    """Rows that repeat the header (two exports pasted together): never data."""
    repeated = pd.Series(True, index=frame.index)
    for name in frame.columns:
        repeated &= frame[name] == name
    hits = np.flatnonzero((repeated & keep).to_numpy())
    if not len(hits):
        return keep, []
    message = "the header is repeated as a data row (files pasted together?): row dropped"
    return keep & ~repeated, [table.problem(hits, message)]


def _exact_duplicates(
    table: _Table, frame: pd.DataFrame, keep: pd.Series
) -> tuple[pd.Series, list[Problem]]:
    duplicated = _duplicated_rows(table.frame) & keep.to_numpy()
    if not duplicated.any():
        return keep, []
    problem = table.problem(
        np.flatnonzero(duplicated), "exact duplicate of an earlier row: dropped"
    )
    return keep & ~duplicated, [problem]


KEY_ROOM = 2**62  # codes combined into one int64 key per row must stay below this


def _duplicated_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows equal to an earlier row, from the columns' codes (one int64 per row) when
    they fit, without hashing every cell."""
    if not all(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in frame.columns):
        return frame.duplicated(keep="first").to_numpy()
    key = np.zeros(len(frame), dtype=np.int64)
    room = 1
    for column in frame.columns:
        size = len(frame[column].cat.categories) + 1
        room *= size
        if room >= KEY_ROOM:  # the codes no longer fit one int64
            return frame.duplicated(keep="first").to_numpy()
        key *= size
        key += frame[column].array.codes  # in place: no int64 copy of each column
        key += 1
    # Sorted rather than hashed: a hash table of a million keys costs 1.6x the file.
    order = np.argsort(key, kind="stable")  # stable: the first in the file stays first
    key = key[order]
    repeated = key[1:] == key[:-1]
    del key
    duplicated = np.zeros(len(frame), dtype=bool)
    duplicated[order[1:][repeated]] = True
    return duplicated


def band_labels(values: pd.Series, edges: tuple[float, ...]) -> tuple[pd.Series, np.ndarray]:
    """Numeric cells to band labels such as "2-4"; returns the labels and the bad positions."""
    numbers = pd.to_numeric(values, errors="coerce")
    numbers = numbers.where(np.isfinite(numbers))  # "inf" fits no band
    bad = np.flatnonzero(numbers.isna().to_numpy() & (values != "").to_numpy())
    bounds = [-np.inf, *edges, np.inf]
    labels = [_band_label(low, high) for low, high in itertools.pairwise(bounds)]
    banded = pd.cut(numbers, bins=bounds, labels=labels, right=False)
    return banded.astype(str).where(numbers.notna(), ""), bad


def _band_label(low: float, high: float) -> str:
    if np.isinf(low):
        return f"<{_fmt(high)}"
    if np.isinf(high):
        return f"{_fmt(low)}+"
    if float(low).is_integer() and float(high).is_integer():
        return f"{_fmt(low)}-{_fmt(high - 1)}"  # whole years: 2-4 means [2, 5)
    return f"{_fmt(low)}-<{_fmt(high)}"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_entities(
    stream: BinaryIO,
    columns: EntityColumns,
    source: str,
    kind: Kind,
    *,
    delimiter: str = ";",
    limits: Limits | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Parse the employees or the trainings extract.

    Returns a frame with the identifier as column ``id``, the title as ``title``
    (trainings) and one column per configured feature, every cell a stripped
    string ("" when blank; banded columns hold their band label).

    Raises
    ------
    ExtractError
        Listing every fatal problem: unreadable file, missing or repeated columns,
        no data rows, the same identifier on rows that disagree, a file over the
        size or row limits, an attribute with too many distinct values.
    """
    limits = limits or Limits()
    wanted = [columns.id, *([columns.title] if columns.title else []), *columns.features]
    table = _read_with_columns(stream, source, limits, wanted, list(columns.extra))

    attributes = [name for name in columns.features if name not in columns.bands]
    frame = _strip(
        table.frame, list(dict.fromkeys(wanted)), categorical=attributes, ids=[columns.id]
    )
    for name in columns.extra:  # optional: kept when the file has it
        if name in table.frame:
            frame[name] = _strip(table.frame, [name])[name]
    problems = [*table.repairs, *_decimal_ids(table, frame, columns.id)]
    dropped: dict[str, int] = {}
    keep, blank = _blank_id_problem(table, frame[columns.id], columns.id)
    kept = _tally(dropped, "identifier blank or refused", len(frame), keep)
    keep, repeated_header = _repeated_header(table, frame, keep)
    kept = _tally(dropped, "header repeated as a row", kept, keep)
    keep, duplicates = _exact_duplicates(table, frame, keep)
    kept = _tally(dropped, "exact duplicate of an earlier row", kept, keep)
    problems += blank + repeated_header + duplicates

    keep = _one_row_per_id(table, frame, keep, columns.id)
    _tally(dropped, "same id and content as an earlier row", kept, keep)
    fatal = _distinct_value_problems(
        table, frame[keep], columns, delimiter, limits.max_distinct_values
    )
    if fatal:
        raise ExtractError(source, fatal)
    text_columns = [c for c in wanted if c not in columns.bands]
    problems += _formula_problems(table, frame, list(dict.fromkeys(text_columns)), keep)
    problems += _band_and_blank_cells(table, frame, keep, columns)

    clean = frame[keep].rename(
        columns={columns.id: ID, **({columns.title: "title"} if columns.title else {})}
    )
    clean = clean.reset_index(drop=True)
    for name in attributes:  # values only dropped rows had are no attribute values
        clean[name] = clean[name].cat.remove_unused_categories()
    report = ValidationReport(
        source, kind, len(frame), len(clean), tuple(problems), {}, dropped, table.text.sha256
    )
    return clean, report


def _tally(dropped: dict[str, int], reason: str, kept_before: int, keep: pd.Series) -> int:
    """Count the rows a step dropped under its reason; return how many are kept now."""
    kept = int(keep.sum())
    if kept < kept_before:
        dropped[reason] = dropped.get(reason, 0) + kept_before - kept
    return kept


def _read_with_columns(
    stream: BinaryIO,
    source: str,
    limits: Limits,
    wanted: list[str],
    optional: list[str] | None = None,
) -> _Table:
    """Read an extract that must have ``wanted`` columns and at least one data row.

    A column whose name differs from a configured one only by case or spacing
    (``user-id``, `` OU``) is read as that column, and the repair reported.
    """
    table = read_table(stream, source, limits)
    renamed = _match_case(table, [*wanted, *(optional or [])])
    fatal = _header_problems(table, wanted, renamed)
    if not fatal and table.frame.empty:
        fatal.append(Problem(source, "no data rows below the header", 2))
    if fatal:
        raise ExtractError(source, fatal)
    return table


def _match_case(table: _Table, configured: list[str]) -> dict[str, str]:
    """Rename the columns that match a configured name but for case and spacing."""

    def key(name: str) -> str:
        return " ".join(name.split()).casefold()

    columns = [str(c) for c in table.frame.columns]
    renamed: dict[str, str] = {}
    for name in dict.fromkeys(configured):
        if name in columns:
            continue
        matches = [c for c in columns if key(c) == key(name) and c not in configured]
        if len(matches) == 1:
            renamed[matches[0]] = name
            message = f"column {matches[0]!r} read as {name!r} (its case or spacing differs)"
            table.repairs.append(Problem(table.source, message, 1, name))
    if renamed:
        table.frame = table.frame.rename(columns=renamed)
    return renamed


def _one_row_per_id(
    table: _Table, frame: pd.DataFrame, keep: pd.Series, id_column: str
) -> pd.Series:
    """Rows repeating an identifier with the same content are dropped; rows that
    disagree on an identifier's attributes are fatal (which one is right is HR's call)."""
    kept = frame[keep]
    repeated = kept[id_column].duplicated(keep=False)
    if not repeated.any():
        return keep
    conflicting = kept[repeated].drop_duplicates()
    ids = conflicting[id_column][conflicting[id_column].duplicated(keep=False)]
    fatal = [
        table.problem(
            np.asarray(ids.index[ids == value]),
            f"identifier {value!r} appears on rows that disagree",
            id_column,
        )
        for value in ids.unique()[:MAX_LINES_LISTED]
    ]
    if fatal:
        raise ExtractError(table.source, fatal)
    return keep & ~frame[id_column].duplicated(keep="first")  # same id, same content


def _band_and_blank_cells(
    table: _Table, frame: pd.DataFrame, keep: pd.Series, columns: EntityColumns
) -> list[Problem]:
    """Band the numeric feature columns in place; report cells that are not numbers
    (banded columns) and blank cells, among the rows kept."""
    problems = []
    for name in columns.features:
        # Before banding, so that a cell reported as not a number is not also "blank".
        blank = np.flatnonzero(((frame[name] == "") & keep).to_numpy())
        if name in columns.bands:
            frame[name], bad = band_labels(frame[name], columns.bands[name])
            bad = bad[keep.to_numpy()[bad]]
            if len(bad):
                problems.append(table.problem(bad, "not a number: cell ignored", name))
        if len(blank):
            problems.append(table.problem(blank, "blank cell: no value for this attribute", name))
    return problems


def parse_taken(
    stream: BinaryIO,
    contract: DataContract,
    source: str,
    known_users: pd.Index | None = None,
    known_trainings: pd.Index | None = None,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Parse the trainings-taken extract into ``user_id``, ``training_id``, ``weight``,
    ``date`` and ``positive``.

    Repairs: rows with a blank id, exact duplicate rows, non-numeric weights and (when
    the known ids are given) rows naming an unknown employee or training are dropped
    and reported; a pair taken several times becomes one row with its highest weight.
    Rows below the configured minimum weight (or without a weight, when there is a
    minimum) are kept with ``positive`` False: they are no success to learn from, but
    the employee took the training, so it is still never recommended to them.

    Rows keep the file's order; with the known ids given, the ids are categoricals
    over them and rows are ordered by employee then training, as the ids are known.
    """
    cols = contract.taken
    optional = [c for c in (cols.weight, cols.date) if c]
    table = _read_with_columns(
        stream, source, contract.limits, [cols.user_id, cols.training_id], optional
    )
    _require_weights(table, cols)

    present = [c for c in (cols.weight, cols.date) if c and c in table.frame.columns]
    wanted = list(dict.fromkeys([cols.user_id, cols.training_id, *present]))
    # Categoricals throughout: a million rows repeat a few thousand ids, ratings, dates.
    frame = _strip(table.frame, wanted, categorical=wanted, ids=[cols.user_id, cols.training_id])
    keep, ids, problems, dropped = _taken_rows(table, frame, cols, known_users, known_trainings)
    kept = int(keep.sum())
    weight_codes, weight_values, bad_weights = _weights(table, frame, keep, cols)
    _tally(dropped, "weight not a number", kept, keep)
    problems += bad_weights

    no_dates = np.zeros(len(frame), dtype=np.int8)
    has_dates = cols.date and cols.date in frame
    date = _categorical(
        frame[cols.date].array if has_dates else pd.Categorical.from_codes(no_dates, pd.Index([""]))
    )
    users, trainings = _categorical(ids["user_id"]), _categorical(ids["training_id"])
    keep_rows = keep.to_numpy()
    rows_before = int(keep_rows.sum())
    grouped = known_users is not None and known_trainings is not None
    weights = (weight_codes, weight_values)
    chosen = _one_row_per_pair(keep_rows, users, trainings, weights, date, grouped)
    weight = weight_values[weight_codes[chosen]]
    # Built once, from the rows kept and without copies: no frame of every row, no
    # masked copy of it.
    clean = pd.DataFrame(
        {
            "user_id": users.take(chosen),
            "training_id": trainings.take(chosen),
            "weight": weight,
            "date": date.take(chosen),
            # NaN (no weight) is below any minimum.
            "positive": weight >= cols.min_weight if cols.min_weight is not None else True,
        },
        copy=False,
    )
    notes: dict[str, int] = {}
    if cols.min_weight is not None:
        notes["below_min_weight"] = int((~clean["positive"]).sum())
    if rows_before > len(clean):
        notes["repeated_pairs_merged"] = rows_before - len(clean)
        dropped["repeated pair merged (highest weight kept)"] = rows_before - len(clean)
    report = ValidationReport(
        source,
        "trainings-taken",
        len(frame),
        len(clean),
        tuple(problems),
        notes,
        dropped,
        table.text.sha256,
    )
    return clean, report


def _require_weights(table: _Table, cols: TakenColumns) -> None:
    """Without its weights no row reaches a minimum weight: refused, not "accepted, 0 kept"."""
    if not cols.weight or cols.min_weight is None or cols.weight in table.frame.columns:
        return
    names = [str(c) for c in table.frame.columns]
    message = (
        f"the weight column is missing, and contract.taken.min_weight "
        f"{cols.min_weight} needs it{did_you_mean(cols.weight, names)}"
    )
    raise ExtractError(table.source, [Problem(table.source, message, 1, cols.weight)])


def _taken_rows(
    table: _Table,
    frame: pd.DataFrame,
    cols: TakenColumns,
    known_users: pd.Index | None,
    known_trainings: pd.Index | None,
) -> tuple[pd.Series, dict[str, Any], list[Problem], dict[str, int]]:
    """The rows of a trainings-taken extract to keep (so far), its id columns (encoded
    against the known ids when given), the problems found and the rows dropped, by reason."""
    problems = [*table.repairs, *_decimal_ids(table, frame, cols.user_id)]
    problems += _decimal_ids(table, frame, cols.training_id)
    dropped: dict[str, int] = {}
    keep, blank = _blank_id_problem(table, frame[cols.user_id], cols.user_id)
    keep_t, blank_t = _blank_id_problem(table, frame[cols.training_id], cols.training_id)
    keep &= keep_t
    kept = _tally(dropped, "identifier blank or refused", len(frame), keep)
    keep, repeated_header = _repeated_header(table, frame, keep)
    kept = _tally(dropped, "header repeated as a row", kept, keep)
    keep, duplicates = _exact_duplicates(table, frame, keep)
    kept = _tally(dropped, "exact duplicate of an earlier row", kept, keep)
    problems += blank + blank_t + repeated_header + duplicates
    ids: dict[str, Any] = {}
    for name, column, known, what in (
        ("user_id", cols.user_id, known_users, "employee"),
        ("training_id", cols.training_id, known_trainings, "training"),
    ):
        ids[name], problem = _known_ids(table, frame, keep, column, known, what)
        kept = _tally(dropped, f"unknown {what}", kept, keep)
        problems += [problem] if problem is not None else []
    return keep, ids, problems, dropped


def _known_ids(
    table: _Table,
    frame: pd.DataFrame,
    keep: pd.Series,
    column: str,
    known: pd.Index | None,
    what: str,
) -> tuple[pd.Series | pd.Categorical, Problem | None]:
    """A column of ids, encoded against the known ids when given (rows naming an unknown
    one are dropped from ``keep``, in place, and reported)."""
    if known is None:
        return frame[column], None
    rows = positions(known, frame[column])
    unknown = np.flatnonzero((rows < 0) & keep.to_numpy())
    problem = None
    if len(unknown):
        problem = table.problem(unknown, f"unknown {what}: row dropped", column)
        keep.iloc[unknown] = False
    # Encoded against the known ids once, here: building the matrices needs no second
    # pass over a million strings.
    return pd.Categorical.from_codes(rows, categories=pd.Index(known, dtype=object)), problem


def _weights(
    table: _Table, frame: pd.DataFrame, keep: pd.Series, cols: TakenColumns
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Each row's code into the distinct weights, and those weights (1 without a weight
    column; NaN for a blank one when there is a minimum); rows whose weight is not a
    number are dropped from ``keep``, in place.

    Ratings repeat: each distinct value is parsed and judged once, and no row holds a
    float until it is kept.
    """
    if not cols.weight or cols.weight not in frame:
        return np.zeros(len(frame), dtype=np.int8), np.ones(1), []
    codes, distinct = distinct_codes(frame[cols.weight])
    numbers = pd.to_numeric(
        pd.Series([v.replace(",", ".") for v in distinct], dtype=object), errors="coerce"
    ).to_numpy(dtype=np.float64, copy=True)
    blank = np.array([v == "" for v in distinct], dtype=bool)
    numbers[blank] = np.nan if cols.min_weight is not None else 1.0
    problems = []
    not_a_number = np.isnan(numbers) & ~blank
    if not_a_number.any():
        bad = np.flatnonzero(not_a_number[codes] & keep.to_numpy())
        if len(bad):
            problems.append(table.problem(bad, "weight is not a number: row dropped", cols.weight))
            keep.iloc[bad] = False
    return codes, numbers, problems


def _one_row_per_pair(
    keep: np.ndarray,
    users: pd.Categorical,
    trainings: pd.Categorical,
    weights: tuple[np.ndarray, np.ndarray],
    dates: pd.Categorical,
    grouped: bool,
) -> np.ndarray:
    """Of the rows to ``keep``, one per (employee, training) pair, as row positions: the
    highest weight, then the latest date (dates sort as text: ISO dates do), then the
    first in the file. ``grouped`` (ids encoded against the known ones, whose codes
    follow the extracts' orders): grouped by employee, trainings in catalog order, so
    that the interaction matrix is read off the frame without sorting a million pairs;
    otherwise file order.

    ``weights`` is each row's code into the distinct weights, and those weights. One
    stable sort of one integer key per row (pair, then preference), built in place.
    """
    weight_codes, weight_values = weights
    # Preference ranks within a pair, 0 first: the highest weight (NaN, no weight, last),
    # then the latest date; computed once per distinct value.
    by_weight = _dense_rank(-weight_values)
    by_date = _dense_rank(np.asarray(dates.categories, dtype=object))
    by_date = by_date.max(initial=0) - by_date
    n_weights, n_dates = int(by_weight.max(initial=0)) + 1, int(by_date.max(initial=0)) + 1
    width = len(trainings.categories) + 1
    key = users.codes[keep].astype(np.int64)
    key *= width
    key += trainings.codes[keep]
    if (len(users.categories) + 1) * width * n_weights * n_dates < KEY_ROOM:
        # One int64 key per row, the pair then the preference: one stable sort (among
        # equal keys, file order decides).
        key *= n_weights
        key += by_weight[weight_codes[keep]]
        key *= n_dates
        key += by_date[dates.codes[keep]]
        order = np.argsort(key, kind="stable")
        key = key[order]
        key //= n_weights * n_dates  # the pair alone
    else:
        preference = (by_weight[weight_codes[keep]], by_date[dates.codes[keep]])
        order = np.lexsort((preference[1], preference[0], key))
        key = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    del key
    chosen = order[first]
    del order
    return np.flatnonzero(keep)[chosen if grouped else np.sort(chosen)]


def _categorical(values: Any) -> pd.Categorical:
    """The values as a categorical: as they are when they already are one (no copy)."""
    return values if isinstance(values, pd.Categorical) else pd.Categorical(values)


def _dense_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank among the distinct values, ascending (equal values share one;
    NaN last)."""
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def parse_extract(
    kind: str, stream: BinaryIO, contract: DataContract, source: str
) -> tuple[pd.DataFrame, ValidationReport]:
    """Parse one extract of the given kind (without cross-checking ids against the others)
    from a seekable binary stream, read a piece at a time."""
    if kind == "users":
        return parse_entities(
            stream,
            contract.users,
            source,
            "users",
            delimiter=contract.value_delimiter,
            limits=contract.limits,
        )
    if kind == "trainings":
        return parse_entities(
            stream,
            contract.trainings,
            source,
            "trainings",
            delimiter=contract.value_delimiter,
            limits=contract.limits,
        )
    if kind == "trainings-taken":
        return parse_taken(stream, contract, source)
    if kind == "roles":
        return parse_entities(
            stream,
            contract.roles,
            source,
            "roles",
            delimiter=contract.value_delimiter,
            limits=contract.limits,
        )
    raise ExtractError(
        source,
        [Problem(source, f"unknown extract kind {kind!r}; expected one of {', '.join(ALL_KINDS)}")],
    )


@dataclass(frozen=True)
class Extracts:
    """The three clean extracts, cross-checked, and what validation reported."""

    users: pd.DataFrame
    trainings: pd.DataFrame
    taken: pd.DataFrame
    reports: tuple[ValidationReport, ...]
    roles: pd.DataFrame | None = None  # the optional roles extract


def parse_all(
    users: BinaryIO,
    trainings: BinaryIO,
    taken: BinaryIO,
    contract: DataContract,
    sources: dict[str, str] | None = None,
) -> Extracts:
    """Parse the three extracts; interactions naming unknown employees or trainings are dropped."""
    names = {
        "users": "users.csv",
        "trainings": "trainings.csv",
        "trainings-taken": "trainings-taken.csv",
    }
    names.update(sources or {})
    user_frame, user_report = parse_extract("users", users, contract, names["users"])
    training_frame, training_report = parse_extract(
        "trainings", trainings, contract, names["trainings"]
    )
    taken_frame, taken_report = parse_taken(
        taken,
        contract,
        names["trainings-taken"],
        pd.Index(user_frame[ID]),
        pd.Index(training_frame[ID]),
    )
    return Extracts(
        user_frame, training_frame, taken_frame, (user_report, training_report, taken_report)
    )

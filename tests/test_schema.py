"""The data contract: every fatal problem raised at once, every repair counted and located."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import ExtractError, Problem
from shared.schema import ID, KINDS, parse_all, parse_entities, parse_extract, parse_taken
from shared.settings import Config, DataContract, EntityColumns, TakenColumns

SOURCE = "hr/extract.csv"
CONTRACT = DataContract()
USERS = "User-Id,ou,skills,language,grade,career interests"
TRAININGS = "Training-Id,Training Title,main skill,category,provider,language,level"
TAKEN = "User-Id,Training-Id,rating,date"
HEADERS = {"users": USERS, "trainings": TRAININGS, "trainings-taken": TAKEN}
GOOD_ROWS = {
    "users": "u1,sales,python;sql,english,G2,data",
    "trainings": "t1,Intro,python,data,Udemy,english,beginner",
    "trainings-taken": "u1,t1,5,2025-01-01",
}


def csv_bytes(*lines: str, end: str = "\n", encoding: str = "utf-8") -> bytes:
    return "".join(line + end for line in lines).encode(encoding)


def fatal(kind: str, data: bytes, contract: DataContract = CONTRACT) -> list[Problem]:
    with pytest.raises(ExtractError) as info:
        parse_extract(kind, io.BytesIO(data), contract, SOURCE)
    error = info.value
    assert error.source == SOURCE
    assert error.problems
    for problem in error.problems:  # the error's message lists every problem
        assert str(problem) in str(error)
    return error.problems


def assert_located(problem: Problem, line: int | None, column: str | None = None) -> None:
    """The problem names the file, the line and the column, as fields and in its text."""
    assert (problem.source, problem.line, problem.column) == (SOURCE, line, column)
    text = str(problem)
    assert text.startswith(SOURCE)
    assert (f"line {line}," in text or f"line {line}:" in text) == (line is not None)
    assert (f"column '{column}'" in text) == (column is not None)
    assert problem.to_dict()["text"] == text


def only(problems: tuple[Problem, ...] | list[Problem], fragment: str) -> Problem:
    matching = [p for p in problems if fragment in p.message]
    assert len(matching) == 1, problems
    return matching[0]


# --- fatal problems --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header", "missing"),
    [
        ("users", "ou,skills,language,grade,career interests", "User-Id"),
        ("trainings", TRAININGS.replace("Training-Id", "Id"), "Training-Id"),
        ("trainings-taken", "User-Id,rating", "Training-Id"),
    ],
)
def test_missing_id_column_is_fatal_and_names_the_column(
    kind: str, header: str, missing: str
) -> None:
    n_fields = header.count(",") + 1
    problems = fatal(kind, csv_bytes(header, ",".join(["x"] * n_fields)))
    problem = only(problems, "required column is missing")
    assert_located(problem, 1, missing)
    assert (
        f"(found {header.split(',', maxsplit=1)[0]!r}" in problem.message
    )  # says what the header has


@pytest.mark.parametrize("data", [b"", b"   \r\n\t\n\n  "], ids=["zero-bytes", "whitespace"])
@pytest.mark.parametrize("kind", KINDS)
def test_empty_file_is_fatal(kind: str, data: bytes) -> None:
    [problem] = fatal(kind, data)
    assert "empty" in problem.message
    assert_located(problem, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_header_without_data_rows_is_fatal(kind: str) -> None:
    [problem] = fatal(kind, csv_bytes(HEADERS[kind], "", ""))
    assert "no data rows" in problem.message
    assert_located(problem, 2)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\x81\x8d", 1),
        (csv_bytes(USERS, GOOD_ROWS["users"]) + b"u2,\x81\x8d,x,y,z,w\n", 3),
    ],
)
def test_bytes_invalid_in_utf8_and_cp1252_are_fatal(data: bytes, line: int) -> None:
    [problem] = fatal("users", data)
    assert "unreadable encoding" in problem.message
    assert "0x81" in problem.message
    assert_located(problem, line)


def test_binary_content_is_fatal_and_names_the_line_of_the_nul_byte() -> None:
    data = csv_bytes(USERS, GOOD_ROWS["users"]) + b"u2,\x00\x01\x02,x\n"
    [problem] = fatal("users", data)
    assert "binary content" in problem.message
    nul = data.index(b"\x00")
    assert f"offset {nul}" in problem.message
    assert_located(problem, 3)


def test_same_id_on_rows_that_disagree_is_fatal_and_names_both_lines() -> None:
    data = csv_bytes(
        USERS,
        "u1,sales,python,english,G2,data",
        "u2,hr,excel,french,G1,finance",
        "u1,legal,python,english,G2,data",
    )
    [problem] = fatal("users", data)
    assert "'u1'" in problem.message
    assert "lines 2, 4" in problem.message
    assert problem.count == 2
    assert_located(problem, 2, "User-Id")


def test_same_id_on_identical_rows_keeps_one() -> None:
    # Same content except a column the model does not use: not a conflict.
    header = USERS + ",name"
    data = csv_bytes(header, GOOD_ROWS["users"] + ",Ann", GOOD_ROWS["users"] + ",Anne")
    frame, report = parse_entities(io.BytesIO(data), CONTRACT.users, SOURCE, "users")
    assert frame["id"].tolist() == ["u1"]
    assert (report.rows_read, report.rows_kept) == (2, 1)


def test_duplicated_column_in_header_is_fatal() -> None:
    data = csv_bytes(USERS + ",ou", GOOD_ROWS["users"] + ",hr")
    [problem] = fatal("users", data)
    assert "more than once" in problem.message
    assert_located(problem, 1, "ou")


@pytest.mark.parametrize("bad_line", [2, 4], ids=["first-row", "later-row"])
def test_row_with_more_fields_than_the_header_is_fatal_and_names_its_line(bad_line: int) -> None:
    rows = [GOOD_ROWS["trainings-taken"], "u2,t1,4,2025-02-01", "u3,t1,3,2025-03-01"]
    rows[bad_line - 2] += ",extra"
    [problem] = fatal("trainings-taken", csv_bytes(TAKEN, *rows))
    assert problem.message == "5 fields where the header has 4"
    assert_located(problem, bad_line)


def test_several_fatal_problems_are_reported_together() -> None:
    # The header repeats one column and lacks two required ones: one error lists all three.
    header = "User-Id,ou,ou,skills,grade"
    problems = fatal("users", csv_bytes(header, "u1,a,b,c,d"))
    assert len(problems) == 3
    assert_located(only(problems, "more than once"), 1, "ou")
    missing = [p for p in problems if "missing" in p.message]
    assert sorted(p.column or "" for p in missing) == ["career interests", "language"]
    for problem in missing:
        assert_located(problem, 1, problem.column)


def test_several_long_rows_are_reported_together() -> None:
    rows = ["u1,t1,5,d", "u2,t1,5,d,x", "u3,t1,5,d", "u4,t1,5,d,x,y"]
    problems = fatal("trainings-taken", csv_bytes(TAKEN, *rows))
    assert [p.line for p in problems] == [3, 5]
    assert [p.message for p in problems] == [
        "5 fields where the header has 4",
        "6 fields where the header has 4",
    ]


def test_header_problems_name_the_header_line_below_blank_lines() -> None:
    data = csv_bytes("", "  ", "User-Id,ou,ou", "u1,a,b")
    problems = fatal("users", data)
    assert_located(only(problems, "more than once"), 3, "ou")
    assert all(p.line == 3 for p in problems)


def test_unclosed_quote_in_a_large_file_is_an_extract_error() -> None:
    # csv stops at its field size limit where pandas does not: still one clear error.
    data = csv_bytes(TAKEN, "u1,t1,5,", 'u2,"t1,5,' + "x" * 200_000, "u3,t1,4,")
    [problem] = fatal("trainings-taken", data)
    assert problem.message == "a quoted field opened here is never closed"
    assert problem.line == 3


def test_unknown_kind_is_an_extract_error() -> None:
    [problem] = fatal("managers", csv_bytes(USERS, GOOD_ROWS["users"]))
    assert "unknown extract kind 'managers'" in problem.message


# --- repairable problems ---------------------------------------------------------------


def test_interactions_naming_unknown_employees_and_trainings_are_dropped() -> None:
    data = csv_bytes(TAKEN, "u1,t1,5,", "ghost,t1,5,", "u2,t9,4,", "u2,t1,3,", "ghost,t9,2,")
    frame, report = parse_taken(
        io.BytesIO(data), CONTRACT, SOURCE, pd.Index(["u1", "u2"]), pd.Index(["t1", "t2"])
    )
    assert list(zip(frame["user_id"], frame["training_id"], strict=True)) == [
        ("u1", "t1"),
        ("u2", "t1"),
    ]
    assert (report.rows_read, report.rows_kept) == (5, 2)
    employee = only(report.problems, "unknown employee")
    assert employee.count == 2
    assert "lines 3, 6" in employee.message
    assert_located(employee, 3, "User-Id")
    training = only(report.problems, "unknown training")
    assert training.count == 1  # line 6 was already dropped for its employee
    assert_located(training, 4, "Training-Id")


def test_with_known_ids_interactions_are_encoded_and_grouped_by_employee() -> None:
    data = csv_bytes(TAKEN, "u2,t2,1,", "u1,t2,2,", "u2,t1,3,", "u1,t1,4,", "u2,t2,5,")
    users, trainings = pd.Index(["u2", "u1"]), pd.Index(["t1", "t2"])  # extracts' orders
    frame, report = parse_taken(io.BytesIO(data), CONTRACT, SOURCE, users, trainings)
    rows = list(zip(frame["user_id"], frame["training_id"], frame["weight"], strict=True))
    assert rows == [("u2", "t1", 3.0), ("u2", "t2", 5.0), ("u1", "t1", 4.0), ("u1", "t2", 2.0)]
    assert list(frame["user_id"].cat.categories) == ["u2", "u1"]
    assert report.notes["repeated_pairs_merged"] == 1
    unknown_ids, _ = parse_taken(io.BytesIO(data), CONTRACT, SOURCE)
    assert unknown_ids["user_id"].tolist() == ["u1", "u2", "u1", "u2"]  # file order
    assert unknown_ids["weight"].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_parse_all_cross_checks_ids_across_the_three_extracts() -> None:
    extracts = parse_all(
        io.BytesIO(csv_bytes(USERS, GOOD_ROWS["users"], "u2,hr,excel,french,G1,finance")),
        io.BytesIO(csv_bytes(TRAININGS, GOOD_ROWS["trainings"])),
        io.BytesIO(csv_bytes(TAKEN, "u1,t1,5,", "u3,t1,4,", "u2,t2,4,", "u2,t1,2,")),
        CONTRACT,
        sources={"trainings-taken": SOURCE},
    )
    assert extracts.users["id"].tolist() == ["u1", "u2"]
    assert extracts.trainings["id"].tolist() == ["t1"]
    assert extracts.taken["user_id"].tolist() == ["u1", "u2"]
    users_report, trainings_report, taken_report = extracts.reports
    assert (users_report.source, trainings_report.source) == ("users.csv", "trainings.csv")
    assert (taken_report.rows_read, taken_report.rows_kept) == (4, 2)
    assert_located(only(taken_report.problems, "unknown employee"), 3, "User-Id")
    assert_located(only(taken_report.problems, "unknown training"), 4, "Training-Id")


def test_blank_attribute_cell_keeps_the_row_and_names_column_and_line() -> None:
    data = csv_bytes(USERS, GOOD_ROWS["users"], "u2,hr,,french,,finance", "u3,hr,sql,,G1,")
    frame, report = parse_entities(io.BytesIO(data), CONTRACT.users, SOURCE, "users")
    assert frame["id"].tolist() == ["u1", "u2", "u3"]
    assert frame.loc[1, "skills"] == ""
    assert report.rows_kept == 3
    blanks = {p.column: p for p in report.problems}
    assert set(blanks) == {"skills", "grade", "language", "career interests"}
    assert_located(blanks["skills"], 3, "skills")
    assert_located(blanks["grade"], 3, "grade")
    assert_located(blanks["language"], 4, "language")
    assert all("blank cell" in p.message for p in report.problems)


@pytest.mark.parametrize(
    ("kind", "row"), [("users", GOOD_ROWS["users"]), ("trainings-taken", "u1,t1,5,2025")]
)
def test_exact_duplicate_rows_are_dropped_once(kind: str, row: str) -> None:
    other = "u2,t1,4,2025" if kind == "trainings-taken" else "u2,hr,sql,english,G1,data"
    data = csv_bytes(HEADERS[kind], row, other, row, row)
    frame, report = parse_extract(kind, io.BytesIO(data), CONTRACT, SOURCE)
    assert len(frame) == 2
    assert (report.rows_read, report.rows_kept) == (4, 2)
    problem = only(report.problems, "exact duplicate")
    assert problem.count == 2
    assert "lines 4, 5" in problem.message
    assert_located(problem, 4)


def test_non_numeric_weight_drops_the_row() -> None:
    data = csv_bytes(TAKEN, "u1,t1,5,", "u2,t1,five,", 'u3,t1,"4,5",', "u4,t1,,")
    frame, report = parse_taken(io.BytesIO(data), CONTRACT, SOURCE)
    assert frame["user_id"].tolist() == ["u1", "u3", "u4"]
    assert frame["weight"].tolist() == [5.0, 4.5, 1.0]  # decimal comma read; blank is 1
    assert_located(only(report.problems, "not a number"), 3, "rating")


@pytest.mark.parametrize(
    ("kind", "rows", "column", "line"),
    [
        ("users", [GOOD_ROWS["users"], " ,hr,sql,english,G1,data"], "User-Id", 3),
        ("trainings", [",T,python,data,Udemy,english,beginner"], "Training-Id", 2),
        ("trainings-taken", ["u1,t1,5,", ",t1,5,"], "User-Id", 3),
        ("trainings-taken", ["u1,  ,5,", "u1,t1,5,"], "Training-Id", 2),
    ],
)
def test_blank_id_drops_the_row(kind: str, rows: list[str], column: str, line: int) -> None:
    frame, report = parse_extract(
        kind, io.BytesIO(csv_bytes(HEADERS[kind], *rows)), CONTRACT, SOURCE
    )
    assert report.rows_kept == len(rows) - 1 == len(frame)
    problem = only(report.problems, "blank identifier")
    assert_located(problem, line, column)


# --- identifiers, encodings, delimiters, line numbers ----------------------------------


def test_ids_stay_strings_with_leading_zeros_and_spaces_stripped() -> None:
    users = csv_bytes(USERS, " 00123 ,sales,python,english,G2,data", "123,hr,sql,english,G1,data")
    taken = csv_bytes(TAKEN, "00123 ,007,5,", "123,7,4,")
    extracts = parse_all(
        io.BytesIO(users),
        io.BytesIO(csv_bytes(TRAININGS, "007,A,b,c,d,e,f", "7,B,b,c,d,e,f")),
        io.BytesIO(taken),
        CONTRACT,
    )
    assert extracts.users["id"].tolist() == ["00123", "123"]
    assert extracts.trainings["id"].tolist() == ["007", "7"]
    pairs = list(zip(extracts.taken["user_id"], extracts.taken["training_id"], strict=True))
    assert pairs == [("00123", "007"), ("123", "7")]
    assert all(report.problems == () for report in extracts.reports)


ENCODED_TEXT = [
    "Training-Id;Training Title;main skill;category;provider;language;level",
    "001;Café für Müller;Müller;Café;Udemy;deutsch;débutant",
    '002;"Straße; Öl";sql;data;Coursera;français;avancé',
]


@pytest.mark.parametrize(
    ("encoding", "end"),
    [
        ("utf-8-sig", "\r\n"),
        ("utf-8", "\n"),
        ("cp1252", "\r\n"),
        ("utf-16", "\r\n"),  # Python writes the BOM (little-endian here)
        ("utf-16-be", "\n"),  # the BOM is added below
    ],
)
def test_encodings_parse_to_the_same_values(encoding: str, end: str) -> None:
    data = csv_bytes(*ENCODED_TEXT, end=end, encoding=encoding)
    if encoding == "utf-16-be":
        data = "\ufeff".encode(encoding) + data
    assert data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) == (
        encoding.startswith("utf-16") or encoding == "utf-8-sig"
    )
    frame, report = parse_entities(io.BytesIO(data), CONTRACT.trainings, SOURCE, "trainings")
    assert report.problems == ()
    assert frame.to_dict("records") == [
        {
            "id": "001",
            "title": "Café für Müller",
            "main skill": "Müller",
            "category": "Café",
            "provider": "Udemy",
            "language": "deutsch",
            "level": "débutant",
        },
        {
            "id": "002",
            "title": "Straße; Öl",
            "main skill": "sql",
            "category": "data",
            "provider": "Coursera",
            "language": "français",
            "level": "avancé",
        },
    ]


@pytest.mark.parametrize(
    "lines",
    [
        [USERS, "u1,sales,python;sql,english,G2,data;cloud"],
        [USERS.replace(",", ";"), 'u1;sales;"python;sql";english;G2;"data;cloud"'],
        [USERS, 'u1,sales,"python;sql",english,G2,"data;cloud"'],
    ],
    ids=["comma", "semicolon-quoted", "comma-quoted"],
)
def test_comma_and_semicolon_delimiters(lines: list[str]) -> None:
    frame, report = parse_entities(io.BytesIO(csv_bytes(*lines)), CONTRACT.users, SOURCE, "users")
    assert report.problems == ()
    assert frame.loc[0].to_dict() == {
        "id": "u1",
        "ou": "sales",
        "skills": "python;sql",
        "language": "english",
        "grade": "G2",
        "career interests": "data;cloud",
    }


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_numbers_count_multi_line_cells_and_blank_lines(end: str) -> None:
    lines = [
        "Training-Id;Training Title;main skill;category;provider;language;level",  # 1
        '1;"A title',  # 2
        'on three lines";python;data;Udemy;english;beginner',  # 3 (record continues)
        "",  # 4
        "   ",  # 5: spaces only, skipped like a blank line
        "2;Second;sql;data;Udemy;english;beginner",  # 6
        "",  # 7
        "\t",  # 8
        "3;Third;sql;;Udemy;english;beginner",  # 9: blank category
    ]
    text = end.join([*lines[:2], "second line", *lines[2:]]) + end
    # With the title's middle line inserted, the row with the blank cell is line 10.
    frame, report = parse_entities(
        io.BytesIO(text.encode()), CONTRACT.trainings, SOURCE, "trainings"
    )
    assert frame["id"].tolist() == ["1", "2", "3"]
    assert frame.loc[0, "title"].split() == ["A", "title", "second", "line", "on", "three", "lines"]
    [problem] = report.problems
    assert_located(problem, 10, "category")


def test_line_numbers_of_fatal_problems_count_multi_line_cells() -> None:
    text = csv_bytes(TAKEN, "", 'u1,t1,5,"a\nb"', "  ", "u2,t1,5,d,extra")
    [problem] = fatal("trainings-taken", text)
    assert_located(problem, 6)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, int]:
    """A trainings file with random blank lines, multi-line titles and line ends, and the
    line on which the one row with a blank ``level`` starts."""
    end = draw(st.sampled_from(["\n", "\r\n"]))
    n_rows = draw(st.integers(1, 6))
    bad = draw(st.integers(0, n_rows - 1))
    parts = [TRAININGS]
    line = 1
    bad_line = 0
    for row in range(n_rows):
        for _ in range(draw(st.integers(0, 2))):
            parts.append(draw(st.sampled_from(["", "  ", "\t"])))
            line += 1
        title_lines = draw(st.integers(1, 3))
        title = '"' + end.join(f"part {i}" for i in range(title_lines)) + '"'
        level = "" if row == bad else "beginner"
        parts.append(f"t{row},{title},python,data,Udemy,english,{level}")
        if row == bad:
            bad_line = line + 1
        line += title_lines
    return end.join(parts) + end, bad_line


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_reported_line_is_where_the_row_starts(layout: tuple[str, int]) -> None:
    text, bad_line = layout
    _, report = parse_entities(io.BytesIO(text.encode()), CONTRACT.trainings, SOURCE, "trainings")
    [problem] = report.problems
    assert_located(problem, bad_line, "level")


# --- configuration: bands, minimum weight, repeated pairs, column names ----------------

BANDED = EntityColumns(id="User-Id", features=("ou", "los"), bands={"los": (2, 5, 10)})


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("0", "<2"),
        ("1.5", "<2"),
        ("2", "2-4"),
        ("4", "2-4"),
        ("5", "5-9"),
        ("9", "5-9"),
        ("10", "10+"),
        ("37", "10+"),
        (" 3 ", "2-4"),
        ("", ""),
    ],
)
def test_numeric_bands(value: str, label: str) -> None:
    frame, report = parse_entities(
        io.BytesIO(csv_bytes("User-Id,ou,los", f"u1,hr,{value}")), BANDED, SOURCE, "users"
    )
    assert frame.loc[0, "los"] == label
    assert [p.message for p in report.problems] == (
        [] if value else ["blank cell: no value for this attribute"]
    )


@pytest.mark.parametrize("value", ["ten", "inf", "n/a"])
def test_non_numeric_band_value_is_reported_once_and_ignored(value: str) -> None:
    data = csv_bytes("User-Id,ou,los", "u1,hr,3", f"u2,hr,{value}")
    frame, report = parse_entities(io.BytesIO(data), BANDED, SOURCE, "users")
    assert frame["los"].tolist() == ["2-4", ""]
    [problem] = report.problems
    assert "not a number" in problem.message
    assert_located(problem, 3, "los")


def test_min_weight_keeps_low_ratings_as_history_not_as_successes() -> None:
    contract = DataContract(taken=TakenColumns(min_weight=4))
    data = csv_bytes(TAKEN, "u1,t1,5,", "u2,t1,3,", "u3,t1,4,", "u4,t1,1,", "u5,t1,,")
    frame, report = parse_taken(io.BytesIO(data), contract, SOURCE)
    # Every row stays (the training was taken: never recommended again); only the
    # ratings of 4 and more are successes to learn from and to measure.
    assert frame["user_id"].tolist() == ["u1", "u2", "u3", "u4", "u5"]
    assert frame["positive"].tolist() == [True, False, True, False, False]
    assert report.notes == {"below_min_weight": 3}  # a blank rating is below the minimum
    assert report.problems == ()
    assert report.to_dict()["notes"] == {"below_min_weight": 3}


YES = {"positive": True}  # no minimum weight: every training taken is a success


def test_repeated_pair_keeps_its_highest_weight() -> None:
    data = csv_bytes(
        TAKEN, "u1,t1,3,2024-01-01", "u2,t1,2,2024-01-01", "u1,t1,5,2023-06-01", "u1,t1,4,"
    )
    frame, report = parse_taken(io.BytesIO(data), CONTRACT, SOURCE)
    assert frame.to_dict("records") == [
        {"user_id": "u2", "training_id": "t1", "weight": 2.0, "date": "2024-01-01"} | YES,
        {"user_id": "u1", "training_id": "t1", "weight": 5.0, "date": "2023-06-01"} | YES,
    ]
    assert report.notes == {"repeated_pairs_merged": 2}


def test_other_column_names_come_from_the_configuration() -> None:
    config = Config.from_dict(
        {
            "contract": {
                "users": {"id": "EmployeeNumber", "features": ["Department", "Skills"]},
                "trainings": {"id": "CourseCode", "title": "Name", "features": ["Topic"]},
                "taken": {
                    "user_id": "EmployeeNumber",
                    "training_id": "CourseCode",
                    "weight": None,
                    "date": "Completed",
                },
            }
        }
    )
    extracts = parse_all(
        io.BytesIO(csv_bytes("EmployeeNumber;Department;Skills", "0042;Sales;crm", "0043;HR;")),
        io.BytesIO(csv_bytes("CourseCode,Name,Topic", "C-1,Negotiation,sales")),
        io.BytesIO(
            csv_bytes("EmployeeNumber,CourseCode,Completed", "0042,C-1,2025-05-01", "0099,C-1,")
        ),
        config.contract,
        sources={"users": SOURCE, "trainings-taken": SOURCE},
    )
    assert extracts.users.columns.tolist() == ["id", "Department", "Skills"]
    assert extracts.trainings.to_dict("records") == [
        {"id": "C-1", "title": "Negotiation", "Topic": "sales"}
    ]
    assert extracts.taken.to_dict("records") == [
        {"user_id": "0042", "training_id": "C-1", "weight": 1.0, "date": "2025-05-01"} | YES
    ]
    users_report, _, taken_report = extracts.reports
    assert_located(users_report.problems[0], 3, "Skills")
    assert_located(only(taken_report.problems, "unknown employee"), 3, "EmployeeNumber")
    # The default names are now missing columns ("skills" is read as "Skills": only
    # its case differs).
    problems = fatal("users", csv_bytes(USERS, GOOD_ROWS["users"]), config.contract)
    assert [p.column for p in problems] == ["EmployeeNumber", "Department"]
    assert_located(problems[0], 1, "EmployeeNumber")


# --- robustness ------------------------------------------------------------------------

CSV_CHARS = [*"ab1;,\"' \t\r\né"]
CSV_PIECES = [
    *CSV_CHARS,
    "\x00",
    "\x81",
    "User-Id",
    "Training-Id",
    "Training Title",
    "rating",
    "skills",
    "\ufeff",
    "\r\n",
    '""',
    "007",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from(CSV_PIECES), max_size=80).map(
            lambda pieces: "".join(pieces).encode()
        ),
        st.builds(
            lambda header, body: (header + "\n" + body).encode("utf-8"),
            st.sampled_from(list(HEADERS.values())),
            st.text(st.sampled_from(CSV_CHARS), max_size=120),
        ),
    ),
)
def test_any_bytes_parse_or_raise_extract_error(kind: str, data: bytes) -> None:
    try:
        frame, report = parse_extract(kind, io.BytesIO(data), CONTRACT, SOURCE)
    except ExtractError as error:
        assert error.problems
        assert all(p.source == SOURCE for p in error.problems)
    else:
        assert len(frame) == report.rows_kept <= report.rows_read
        assert report.kind == kind
        assert all(p.source == SOURCE for p in report.problems)


def test_attributes_are_categorical_stripped_and_only_of_the_kept_rows() -> None:
    data = (
        b"User-Id,ou,skills,los\n"
        b"u1, Sales ,python;sql,3\n"
        b"u2,Sales,excel,5\n"
        b",Legal,gdpr,1\n"  # blank id: dropped, and its values with it
    )
    columns = EntityColumns(
        id="User-Id",
        features=("ou", "skills", "los"),
        multi_valued=("skills",),
        bands={"los": (2, 5, 10)},
    )
    frame, report = parse_entities(io.BytesIO(data), columns, "users.csv", "users")
    assert frame["ou"].tolist() == ["Sales", "Sales"]
    assert list(frame["ou"].cat.categories) == ["Sales"]  # " Sales " and "Sales" merged
    assert list(frame["skills"].cat.categories) == ["excel", "python;sql"]
    assert frame[ID].tolist() == ["u1", "u2"] and frame[ID].dtype == "str"
    assert frame["los"].tolist() == ["2-4", "5-9"]  # banded: labels, not categories
    assert report.rows_kept == 2


def test_every_row_dropped_is_counted_under_its_reason() -> None:
    users = csv_bytes(
        USERS,
        "u1,sales,python,english,G2,data",
        " u1 ,sales,python,english,G2,data",  # the same row but for spaces around the id
        ",sales,python,english,G2,data",  # blank id
        USERS,  # two exports pasted together
        "u2,hr,sql,french,G3,people",
        "u2,hr,sql,french,G3,people",  # exact duplicate
        "a/b,hr,sql,french,G3,people",  # an id the API refuses
    )
    _, report = parse_extract("users", io.BytesIO(users), CONTRACT, SOURCE)
    assert (report.rows_read, report.rows_kept) == (7, 2)
    assert report.dropped == {
        "identifier blank or refused": 2,
        "header repeated as a row": 1,
        "exact duplicate of an earlier row": 1,
        "same id and content as an earlier row": 1,
    }

    contract = DataContract.model_validate({"taken": {"min_weight": 4}})
    taken = csv_bytes(
        TAKEN,
        "u1,t1,5,2025-01-01",
        "u1,t1,4,2025-02-01",  # the pair again: merged, highest weight kept
        ",,5,2025-01-01",  # both ids blank: one row, counted once
        "u9,t1,5,2025-01-01",  # unknown employee
        "u1,t9,5,2025-01-01",  # unknown training
        "u2,t1,five,2025-01-01",  # weight not a number
        "u2,t2,2,2025-01-01",  # below min_weight: kept, set apart
    )
    _, report = parse_taken(
        io.BytesIO(taken), contract, SOURCE, pd.Index(["u1", "u2"]), pd.Index(["t1", "t2"])
    )
    assert (report.rows_read, report.rows_kept) == (7, 2)
    assert report.dropped == {
        "identifier blank or refused": 1,
        "unknown employee": 1,
        "unknown training": 1,
        "weight not a number": 1,
        "repeated pair merged (highest weight kept)": 1,
    }
    assert report.notes["below_min_weight"] == 1
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())


def _reference_one_row_per_pair(lines: list[tuple[str, str, str, str]]) -> list[dict[str, object]]:
    """The rule, written plainly: per pair the highest weight (blank lowest), then the
    latest date, then the first in the file; pairs in the order of their chosen rows."""
    best: dict[tuple[str, str], int] = {}
    for i, (user, training, weight, date) in enumerate(lines):
        value = float(weight) if weight else float("-inf")
        j = best.get((user, training))
        if j is None:
            best[(user, training)] = i
            continue
        other = float(lines[j][2]) if lines[j][2] else float("-inf")
        if (value, date) > (other, lines[j][3]):
            best[(user, training)] = i
    return [
        {"user_id": lines[i][0], "training_id": lines[i][1], "date": lines[i][3]}
        for i in sorted(best.values())
    ]


@pytest.mark.parametrize("room", [None, 1], ids=["one key", "lexsort"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3"]),
            st.sampled_from(["t1", "t2"]),
            st.sampled_from(["", "3", "4", "4.0", "5"]),  # "4" and "4.0" weigh the same
            st.sampled_from(["", "2024-01-01", "2024-06-01"]),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_one_row_per_pair_follows_the_rule(
    room: int | None, lines: list[tuple[str, str, str, str]]
) -> None:
    data = csv_bytes(TAKEN, *(",".join(line) for line in lines))
    with pytest.MonkeyPatch.context() as patch:
        if room is not None:  # the path for codes too many to share one int64 key
            patch.setattr("shared.schema.KEY_ROOM", room)
        frame, report = parse_taken(io.BytesIO(data), CONTRACT, SOURCE)
    expected = _reference_one_row_per_pair(lines)
    assert frame[["user_id", "training_id", "date"]].to_dict("records") == expected
    assert report.rows_read == len(lines)
    assert report.rows_kept + sum(report.dropped.values()) == len(lines)

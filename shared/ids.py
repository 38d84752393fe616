r"""One rule for identifiers, the same for the extracts and the API.

An id is 1 to ``MAX_ID_LENGTH`` characters of any script (``00042``, ``user.42+hr@corp.
example.com``, ``José-Ünal``), with no surrounding space, no control character, no
invisible one (zero-width space, BOM, soft hyphen, no-break space), no ``/`` (a URL
path segment cannot carry it, even encoded) and none of ``\ < > " ' ` `` (markup and
quoting, which no HR id needs and which an answer must never carry back). Invisible
and control characters are removed when an extract is read (a spreadsheet adds them
unseen) and refused in requests; ids longer than the cap, or with a refused
character, are reported and their rows dropped: the API could not serve them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

MAX_ID_LENGTH = 128
# Control characters, then the invisible ones spreadsheets and web pages leave behind:
# no-break space, soft hyphen, zero-width space / non-joiner / joiner, word joiner, BOM.
INVISIBLE = "".join(map(chr, [*range(0x20), 0x7F, 0xA0, 0xAD, 0x200B, 0x200C, 0x200D, 0x2060]))
INVISIBLE += "\ufeff"
REFUSED = "/\\<>\"'`"
_NOT_ALLOWED = re.escape(INVISIBLE + REFUSED)
_INVISIBLE = re.compile(f"[{re.escape(INVISIBLE)}]")
# A whole number a spreadsheet wrote as a decimal ("42.0"): its digits are group 1.
DECIMAL_ID = re.compile(r"^([0-9]+)\.0+$")

# What str.strip() removes, listed: regex engines disagree on what \s covers (U+0085).
SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_EDGE = re.escape(SPACES) + _NOT_ALLOWED
# For the API (OpenAPI ``pattern``): no lookaround, which pydantic's regex engine lacks.
ID_PATTERN = rf"^[^{_EDGE}](?:[^{_NOT_ALLOWED}]*[^{_EDGE}])?$"
ID_DESCRIPTION = (
    f"1 to {MAX_ID_LENGTH} characters of any script (e.g. an email address), without "
    f"surrounding spaces, control or invisible characters, or any of {REFUSED}; "
    "URL-encode it in a path"
)


def clean_id(text: str) -> str:
    """An id as read from an extract: invisible and control characters removed, stripped."""
    return _INVISIBLE.sub("", text).strip()


def id_problem(text: str) -> str | None:
    """Why a clean id cannot be served, or None."""
    if len(text) > MAX_ID_LENGTH:
        return f"identifier longer than {MAX_ID_LENGTH} characters"
    refused = sorted({c for c in text if c in REFUSED})
    if refused:
        return f"identifier contains {' '.join(refused)}, which the API refuses in an id"
    return None


# An id in an API model: the rule above, documented in the OpenAPI schema.
Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description=ID_DESCRIPTION),
]


def whole_number(value: Any) -> Any:
    # JSON has one number type: 14.0 is the integer 14 (as JSON Schema says); 14.5 and
    # "14" stay refused by a strict model.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A count or a position in an API model.
WholeNumber = Annotated[int, BeforeValidator(whole_number)]

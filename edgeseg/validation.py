"""Typed checks of untrusted JSON (bundle manifests, checkpoint specs): one line naming the field on failure.

Each check returns the value (converted where that is lossless) or raises :class:`FieldError`, an
:class:`EdgesegError` whose message starts with the dotted path of the field, e.g.
``artifacts[2].files.model: expected a string, got int``.
"""
from __future__ import annotations

import math
import re
import sys

from edgeseg.errors import EdgesegError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# what ``json.loads`` of untrusted text raises: ValueError for invalid JSON or text (JSONDecodeError and
# UnicodeDecodeError are ValueErrors) and for an integer beyond Python's 4300-digit limit; RecursionError for
# nesting deeper than the interpreter's recursion limit
JSON_ERRORS = (ValueError, RecursionError)
_MAX_LINE = 300  # an error line quotes at most this much of what it was given


class FieldError(EdgesegError):
    """A field of a JSON document has the wrong type or an impossible value."""


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: how an error line quotes an untrusted value."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer beyond the digit limit, a structure nested too deep
        text = f"<{_type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fail(field: str, message: str):
    line = f"{field}: {message}"
    raise FieldError(line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…")


def expect_dict(value, field: str) -> dict:
    if not isinstance(value, dict):
        fail(field, f"expected an object, got {_type_name(value)}")
    return value


def expect_list(value, field: str, min_len: int = 0, max_len: int = 10_000) -> list:
    if not isinstance(value, list):
        fail(field, f"expected a list, got {_type_name(value)}")
    if not min_len <= len(value) <= max_len:
        fail(field, f"expected {min_len}..{max_len} items, got {len(value)}")
    return value


def expect_str(value, field: str, max_len: int = 4096, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str):
        fail(field, f"expected a string, got {_type_name(value)}")
    if len(value) > max_len or "\x00" in value:
        fail(field, f"string too long or with a NUL character ({len(value)} characters)")
    if pattern is not None and not pattern.match(value):
        fail(field, f"{value[:80]!r} is not of the form {pattern.pattern}")
    return value


def expect_int(value, field: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``; JSON floats (``1e12``, ``2.0``) and booleans are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(field, f"expected an integer, got {_type_name(value)} {short(value)}")
    if not lo <= value <= hi:
        fail(field, f"{short(value)} is outside {lo}..{hi}")
    return value


def expect_number(value, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number in ``[lo, hi]`` as a float (booleans, NaN, infinities and integers no float holds refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not math.isfinite(value)):
        fail(field, f"expected a finite number, got {_type_name(value)} {short(value)}")
    if abs(value) > sys.float_info.max:
        fail(field, f"{short(value)} is too large for a float")
    if not lo <= value <= hi:
        fail(field, f"{short(value)} is outside {lo}..{hi}")
    return float(value)


def expect_choice(value, field: str, choices):
    """One of ``choices``, of the same type too: ``2.0`` or ``True`` is not the choice ``2`` or ``1``."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        fail(field, f"{str(value)[:80]!r} is not one of {', '.join(map(str, choices))}")
    return value


def expect_str_list(value, field: str, min_len: int = 0, max_len: int = 10_000) -> list[str]:
    for i, item in enumerate(expect_list(value, field, min_len, max_len)):
        expect_str(item, f"{field}[{i}]", max_len=256)
    return value


def paths_as_path(config) -> None:
    """Turn the ``str`` (or ``os.PathLike``) values of a dataclass's ``Path`` fields into :class:`Path`, in place
    (``list[Path]`` fields item by item): configs built from Python accept either."""
    import dataclasses
    import os
    from pathlib import Path

    for f in dataclasses.fields(config):
        value, annotation = getattr(config, f.name), str(f.type)
        if "Path" not in annotation or value is None:
            continue
        if annotation.startswith("list["):  # one path alone counts as a list of one
            setattr(config, f.name, [Path(value)] if isinstance(value, (str, os.PathLike)) else [Path(v) for v in value])
        elif isinstance(value, (str, os.PathLike)):
            setattr(config, f.name, Path(value))

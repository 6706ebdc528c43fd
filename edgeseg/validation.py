"""Typed checks of untrusted JSON (bundle manifests, checkpoint specs): one line naming the field on failure.

Each check returns the value (converted where that is lossless) or raises :class:`FieldError`, an
:class:`EdgesegError` whose message starts with the dotted path of the field, e.g.
``artifacts[2].files.model: expected a string, got int``.
"""
from __future__ import annotations

import math
import re

from edgeseg.errors import EdgesegError

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FieldError(EdgesegError):
    """A field of a JSON document has the wrong type or an impossible value."""


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def fail(field: str, message: str):
    raise FieldError(f"{field}: {message}")


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
        fail(field, f"expected an integer, got {_type_name(value)} {value!r}"[:160])
    if not lo <= value <= hi:
        fail(field, f"{value} is outside {lo}..{hi}")
    return value


def expect_number(value, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(field, f"expected a finite number, got {_type_name(value)} {value!r}"[:160])
    if not lo <= value <= hi:
        fail(field, f"{value} is outside {lo}..{hi}")
    return float(value)


def expect_choice(value, field: str, choices) -> str:
    if value not in tuple(choices):
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

"""The contract of an ``edgeseg bench`` result: the JSON Schema, validation and a safe reader.

Additive keys keep ``schema_version`` 1; any rename, removal or change of meaning bumps it, and readers refuse
a version newer than :data:`RESULT_SCHEMA_VERSION` (benchmarks/SCHEMA.md).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from edgeseg.errors import EdgesegError, InputError

RESULT_SCHEMA_NAME = "edgeseg-bench"
RESULT_SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("result_schema.json")
# Bounds on a JSON document edgeseg reads back (a bench result, a gate baseline): a result of thousands of cases
# is a few MB and ~10⁵ values, 8 levels deep; beyond these a document is refused in one line instead of parsed
# or validated for minutes.
MAX_DOCUMENT_BYTES = 64 << 20
MAX_ITEMS = 100_000     # items of one list or object
MAX_VALUES = 2_000_000  # values in one document
MAX_DEPTH = 32


def load_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a version-1 result."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema())


def _where(result: dict, path) -> str:
    """``artifacts[2] (x86-openvino-int8).status`` from a jsonschema path, for messages people can act on."""
    text = ""
    for i, key in enumerate(path):
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
        if i == 1 and path[0] == "artifacts" and isinstance(key, int):
            try:
                text += f" ({result['artifacts'][key]['name']})"
            except (KeyError, IndexError, TypeError):
                pass
    return text.lstrip(".") or "(top level)"


def _too_large(result) -> str | None:
    """A size no bench result has, where: jsonschema would take minutes over a few million values (walked without
    recursion, so a deep nesting is measured, not followed)."""
    stack, seen = [((), result)], 0
    while stack:
        path, value = stack.pop()
        seen += 1
        if isinstance(value, (dict, list)):
            if len(value) > MAX_ITEMS or len(path) > MAX_DEPTH or seen + len(value) > MAX_VALUES:
                return (f"{_where(result, path)}: {len(value)} items at depth {len(path)}: larger or deeper than any "
                        f"bench result (≤ {MAX_ITEMS} items per list or object, depth ≤ {MAX_DEPTH}, ≤ {MAX_VALUES} "
                        "values in all)")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*path, key), item) for key, item in items)
    return None


def _non_finite(value, path=()):
    """Paths of NaN/Infinity anywhere in the result (JSON has neither; the schema can't see them)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _get(value, path):
    for key in path:
        value = value[key]
    return value


def _shorten(message: str, limit: int = 200) -> str:
    """jsonschema quotes the offending value, which can be a whole artifact."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _minimal_problems(result) -> list[str]:
    """Without jsonschema: only the top-level keys and the schema name/version."""
    if not isinstance(result, dict):
        return [f"(top level): expected an object, got {type(result).__name__}"]
    required = load_schema()["required"]
    problems = [f"(top level): '{key}' is a required property" for key in required if key not in result]
    if "schema" in result and result["schema"] != RESULT_SCHEMA_NAME:
        problems.append(f"schema: {result['schema']!r} is not {RESULT_SCHEMA_NAME!r}")
    version = result.get("schema_version")
    if "schema_version" in result and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        problems.append(f"schema_version: {version!r} is not a positive integer")
    return problems


def validate_result(result: dict) -> list[str]:
    """Human-readable problems with ``result`` (empty when it is a valid version-1 result)."""
    if too_large := _too_large(result):
        return [too_large]
    try:
        validator = _validator()
    except ImportError:
        return _minimal_problems(result)
    problems = [f"{_where(result, path)}: {_get(result, path)} is not allowed in JSON (use null)"
                for path in _non_finite(result)]
    errors = sorted(validator.iter_errors(result), key=lambda e: [str(k) for k in e.absolute_path])
    problems += [f"{_where(result, list(e.absolute_path))}: {_shorten(e.message)}" for e in errors]
    if not problems:  # cross-field rules the schema can't express
        names = [a["name"] for a in result["artifacts"]]
        problems += [f"artifacts: name {n!r} appears {names.count(n)} times" for n in sorted(set(names))
                     if names.count(n) > 1]
        if result["reference"] not in names:
            problems.append(f"reference: {result['reference']!r} is not the name of an artifact")
    return problems


def read_document(path: str | Path, what: str):
    """The JSON content of ``path`` (a bench result, a baseline): refused in one line when it is larger than
    :data:`MAX_DOCUMENT_BYTES`, unreadable or not JSON (also an integer of > 4300 digits, nesting too deep)."""
    from edgeseg.data.io import read_json

    try:
        size = Path(path).stat().st_size
    except OSError:
        size = 0  # the reader says why it cannot read it
    if size > MAX_DOCUMENT_BYTES:
        raise InputError(f"{path}: {size / 2**20:.0f} MB, larger than any {what} edgeseg writes "
                         f"(≤ {MAX_DOCUMENT_BYTES >> 20} MB); not read")
    return read_json(Path(path), what)


def read_result(path: str | Path) -> dict:
    """Load a results JSON written by ``edgeseg bench``; raise :class:`EdgesegError` unless it is one we can read."""
    path = Path(path)
    return check_result(read_document(path, "benchmark result"), path)


def check_result(result, source) -> dict:
    """``result`` if it is an ``edgeseg bench`` result this version reads; else a one-line error naming ``source``."""
    if not isinstance(result, dict) or result.get("schema") != RESULT_SCHEMA_NAME:
        found = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise EdgesegError(f"{source}: not an {RESULT_SCHEMA_NAME} result (schema: {found!r})")
    version = result.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > RESULT_SCHEMA_VERSION:
        raise EdgesegError(f"{source}: {RESULT_SCHEMA_NAME} schema_version {version} is newer than this edgeseg reads "
                           f"({RESULT_SCHEMA_VERSION}); upgrade edgeseg")
    problems = validate_result(result)
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise EdgesegError(f"{source}: invalid {RESULT_SCHEMA_NAME} result: {problems[0]}{more}")
    return result

"""The record fields the stages read, and what each must hold: one table, checked wherever a record is read.

    >>> field_error({"answer": None}, ["answer"])
    "field 'answer': expected a non-empty string or number, got null"
    >>> field_error({"segments": ["a", 1]}, ["segments"])
    "field 'segments': expected a list of strings, got a list whose item 1 is a number"
"""
from __future__ import annotations

import json
import math
from typing import Callable, Iterable


def describe(value) -> str:
    """A value as an error message names it: ``null``, ``true``, ``a string``, ``a list``, ..."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _list_of(ok: Callable[[object], bool], what: str = ""):
    """A check: True for a list whose items all pass ``ok``, else what is wrong."""
    def check(v):
        if not isinstance(v, list):
            return describe(v)
        bad = next((i for i, x in enumerate(v) if not ok(x)), None)
        if bad is None:
            return True
        x = v[bad]
        got = repr(x) if isinstance(x, float) and not math.isfinite(x) else describe(x)  # nan, inf
        return f"a list whose item {bad} is {what or got}"
    return check


_numbers = _list_of(_number)


def _per_segment(items):
    """Items of a list that has one entry per segment (when the record has segments)."""
    def check(rec, v):
        verdict = items(v)
        n = rec.get("segments")
        if verdict is True and isinstance(n, list) and len(v) != len(n):
            return f"{len(v)} entries for {len(n)} segments"
        return verdict
    return check


def _segments(rec, v):
    verdict = _list_of(lambda s: isinstance(s, str))(v)
    if verdict is True and isinstance(rec.get("solution"), str) and "".join(v) != rec["solution"]:
        return "segments that do not join to the solution"
    return verdict


def _span_ids(rec, v):
    verdict = _list_of(lambda i: isinstance(i, int) and not isinstance(i, bool))(v)
    n = rec.get("segments")
    if verdict is True and isinstance(n, list) and any(not 0 <= i < len(n) for i in v):
        return f"indices outside 0..{len(n) - 1}"
    return verdict


# field -> (what it must hold, check(record, value) -> True or what was found instead)
FIELDS: dict[str, tuple[str, Callable[[dict, object], object]]] = {
    "question": ("a non-empty string", lambda r, v: (isinstance(v, str) and bool(v.strip())) or describe(v)),
    "solution": ("a string", lambda r, v: isinstance(v, str) or describe(v)),
    "answer": ("a non-empty string or number",
               lambda r, v: (isinstance(v, str) and bool(v.strip())) or _number(v) or describe(v)),
    "segments": ("a list of strings", _segments),
    "attributions": ("a list of lists of numbers, one per segment", _per_segment(
        _list_of(lambda a: _numbers(a) is True, "not a list of numbers"))),
    "strength": ("a list of numbers, one per segment", _per_segment(_numbers)),
    "consistency": ("a list of numbers, one per segment", _per_segment(_numbers)),
    "selected_spans_ids": ("a list of segment indices", _span_ids),
}
# field -> the segkit stage that writes it
MADE_BY = {"segments": "segment", "attributions": "attribute", "strength": "attribute", "consistency": "attribute",
           "segment_log_perplexity": "attribute", "segment_entropy": "attribute", "selected_spans_ids": "select"}
# where a missing field comes from: a stage to run, or (planted roles) only the testbed
HINTS = {**{name: f"run `segkit {stage}` first" for name, stage in MADE_BY.items()},
         "segment_roles": "the planted roles that only the testbed's records from `segkit synth` have"}


def field_error(rec: dict, fields: Iterable[str]) -> str | None:
    """The error message for ``rec``'s ``fields`` (one missing, or not of the type in ``FIELDS``), or None."""
    fields = list(fields)
    missing = [k for k in fields if k not in rec]
    if missing:
        return "missing field " + ", ".join(f"'{k}'" + (f" ({HINTS[k]})" if k in HINTS else "") for k in missing)
    for k in fields:
        if k in FIELDS:
            want, check = FIELDS[k]
            verdict = check(rec, rec[k])
            if verdict is not True:
                return f"field '{k}': expected {want}, got {verdict}"
    return None

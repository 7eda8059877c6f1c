"""Stage 1 -- segment: split a reasoning trace at reflection keywords.

The keyword opens the next segment; the first segment is the text before the first keyword, so
``"".join(segment(trace)) == trace`` always. Segment indices are those of the authors' release
(``re.split`` on the keyword alternation), which keeps ``selected_spans_ids`` interchangeable. Traces with
Windows line breaks split the same way: a keyword's ``\n`` also matches ``\r\n`` (the text is not changed).

    >>> segment("Let x=2.\\n\\nWait, x=3.")
    ['Let x=2.', '\\n\\nWait, x=3.']
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Sequence

from .prompt import Span, char_spans, token_spans  # noqa: F401 (the token-span helpers live in plumbing)
from .records import stage_options

_INPUT, _OUT, _ON_ERROR, _UNIQUE_IDS = stage_options("JSON Lines with question, solution, answer")

KEYWORDS: dict[str, tuple[str, ...]] = {
    # the paper's list
    "paper": ("\n\nWait", "\n\nAlternatively", "\n\nBut wait", "\n\nBut alternatively", "\n\nBut just to",
              "\n\nHowever", "\n\nNot sure", "\n\nGoing back", "\n\nBacktrack", "\n\nTrace back", "\n\nAnother"),
    # the retrospective list of the authors' release
    "retro": ("\n\nWait", "\n\nAlternatively", "\n\nBut", "\n\nHowever", "\n\nHmmm", "\n\nHmm", "\n\nNot sure",
              "\n\nGoing back", "\n\nBacktrack", "\n\nTrace back", "\n\nAnother"),
}


def resolve_keywords(keywords: str | Sequence[str] = "paper") -> tuple[str, ...]:
    """A named list (``paper``, ``retro``) or the user's own keywords (escape sequences such as ``\\n`` decoded)."""
    if isinstance(keywords, str):
        if keywords not in KEYWORDS:
            raise ValueError(f"unknown keyword list {keywords!r}; choose one of {sorted(KEYWORDS)} or pass keywords")
        return KEYWORDS[keywords]
    out = tuple(k.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in k else k for k in keywords)
    if not out or any(not k for k in out):
        raise ValueError("keywords must be non-empty strings")
    return out


@lru_cache(maxsize=32)
def _pattern(keywords: tuple[str, ...]) -> re.Pattern:
    # longest first, so that "\n\nBut wait" is one keyword rather than "\n\nBut" + " wait" (the split point is the
    # same either way; the order only matters for reporting which keyword opened a segment)
    # a "\n" of a keyword also matches "\r\n": traces written on Windows split where they would with "\n"
    alternation = "|".join(re.escape(k).replace("\n", "\r?\n") for k in sorted(keywords, key=len, reverse=True))
    return re.compile(f"({alternation})")


def segment(trace: str, keywords: str | Sequence[str] = "paper") -> list[str]:
    """Split ``trace`` so that each keyword and the text after it form one segment.

    Agrees with ``re.split("(kw1|kw2|...)", trace)`` with each keyword re-joined to the text that follows it (for
    traces with ``\n`` line breaks; with ``\r\n`` they split at the same places).
    A trace that starts with a keyword has an empty first segment (kept, so indices match the reference split).
    """
    parts = _pattern(resolve_keywords(keywords)).split(trace)
    return [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]


def segments_of(record: dict, keywords: str | Sequence[str] = "paper") -> list[str]:
    """The record's segments: its ``segments`` field if the segment stage ran, else its solution split here."""
    if "segments" in record:
        return list(record["segments"])
    if "solution" not in record:
        raise ValueError("record has neither 'segments' nor 'solution'")
    return segment(record["solution"], keywords)


@dataclass
class SegmentConfig:
    input: str = _INPUT
    out: str = _OUT
    keywords: str = field(default="paper", metadata={"choices": tuple(KEYWORDS), "help": "keyword list"})
    keyword: list[str] = field(default_factory=list, metadata={
        "help": "your own keywords instead of a list (escapes like \\n\\n decoded), e.g. --keyword '\\n\\nWait'"})
    on_error: str = _ON_ERROR
    unique_ids: str = _UNIQUE_IDS

    def __post_init__(self):
        resolve_keywords(self.keyword or self.keywords)  # unknown list or empty keyword: fail before reading


def segment_record(rec: dict, keywords: str | Sequence[str] = "paper") -> dict:
    """``rec`` with ``segments`` added (its ``solution`` split; the other fields passed through)."""
    if not isinstance(rec["solution"], str) or not rec["solution"].strip():
        raise ValueError("empty solution")
    return {**rec, "segments": segment(rec["solution"], keywords)}


def run_segment(cfg: SegmentConfig) -> str:
    from .records import run_stage

    kw = cfg.keyword or cfg.keywords
    res = run_stage(lambda r: segment_record(r, kw), cfg.input, cfg.out, required=("solution",), desc="segment",
                    on_error=cfg.on_error, overwrite=True, dedupe_ids=cfg.unique_ids)
    return f"{res.done} traces segmented, {len(res.skipped)} skipped -> {cfg.out}"

"""The training modes: one table of what each mode of ``segkit train`` trains, what it needs and how it reads.

A mode names the segments that carry the loss (before the always-kept ones are added). Each row says which record
fields it needs, how it picks segments from them, and the one line notebooks and reports show. The command line's
choices, the pipeline's list of runnable modes and the notebooks' table of modes all read this table. The controls
``random-tokens`` and ``length`` match ``selective`` in trained tokens, not segments (``fill_to_budget``).

    >>> segments_for_mode({"segments": ["a", "b", "c"], "selected_spans_ids": [1]}, "selective")
    [1]
    >>> unavailable(["full", "oracle"], [{"question": "q", "solution": "s"}])["oracle"]
    "needs the field 'segment_roles' (the planted roles that only the testbed's records from `segkit synth` have)"
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .fields import HINTS, MADE_BY
from .roles import is_useful
from .score import TAU, always_kept, random_selection, top_by_cumulative, top_k
from .segment import segments_of

# (record, number of segments, seed, tau) -> indices of the segments the mode trains
Pick = Callable[[dict, int, int, float], Iterable[int]]


@dataclass(frozen=True)
class Mode:
    name: str
    needs: tuple[str, ...]  # record fields the pick reads
    pick: Pick
    description: str        # what it trains, in one line
    prunes: bool = False    # the untrained segments are cut from the text instead of masked


def _as_many_as_selected(record: dict) -> int:
    return len(record["selected_spans_ids"])


def _draw_key(record: dict, seed: int) -> str:
    # per fine-tuning seed and per trace, so two traces with the same number of segments do not train the same
    # positions and each seed trains a fresh draw
    return f"{seed}:{record.get('id')}"


def segment_tokens(record: dict) -> list[int]:
    """Tokens per segment as the attributor counted them (one attribution per token). The trained model's
    tokenizer may cut a little differently; a token-matched control matches in the attributor's tokens."""
    return [len(a) for a in record["attributions"]]


def fill_to_budget(order: Sequence[int], tokens: Sequence[int], budget: int) -> list[int]:
    """The segments taken walking ``order``: each one that brings the token total closer to ``budget`` (it is
    shorter than twice what is still missing), the others skipped. The total lands within half a segment of the
    budget: a shortfall remains only when every skipped segment was at least twice as long, and an overshoot is less
    than half the segment that made it."""
    taken, total = [], 0
    for i in order:
        if tokens[i] < 2 * (budget - total):
            taken.append(i)
            total += tokens[i]
    return taken


def _token_matched(record: dict, n: int, order: Callable[[list[int], list[int]], list[int]]) -> list[int]:
    """Segments, in ``order(candidates, tokens)``, filled up to the tokens ``selective`` trains beyond the
    always-kept segments (``score.ALWAYS_KEEP``, which every mode trains anyway): the controls at its budget."""
    tokens = segment_tokens(record)
    if len(tokens) != n:
        raise ValueError(f"record {record.get('id')!r}: attributions cover {len(tokens)} segments, the trace has {n}")
    kept = set(always_kept(n))
    free = [i for i in range(n) if i not in kept]
    budget = sum(tokens[i] for i in record["selected_spans_ids"] if i not in kept)
    return fill_to_budget(order(free, tokens), tokens, budget)


def _random_tokens(record: dict, n: int, seed: int, tau: float) -> list[int]:
    draw = random.Random(_draw_key(record, seed))
    return _token_matched(record, n, lambda free, tokens: draw.sample(free, len(free)))


def _longest(record: dict, n: int, seed: int, tau: float) -> list[int]:
    return _token_matched(record, n, lambda free, tokens: sorted(free, key=lambda i: (-tokens[i], i)))


_TABLE = (
    Mode("full", (), lambda r, n, seed, tau: range(n), "every segment"),
    Mode("selective", ("selected_spans_ids",), lambda r, n, seed, tau: r["selected_spans_ids"],
         "the segments the IG rule selects at (tau, beta) (the paper's method)"),
    Mode("pruned", ("selected_spans_ids",), lambda r, n, seed, tau: r["selected_spans_ids"],
         "the same segments, with the others cut from the text", prunes=True),
    Mode("random", ("selected_spans_ids",),
         lambda r, n, seed, tau: random_selection(n, _as_many_as_selected(r), _draw_key(r, seed)),
         "as many random segments per trace"),
    Mode("strength-only", ("strength",), lambda r, n, seed, tau: top_by_cumulative(r["strength"], tau),
         "the top-tau strength segments, consistency ignored"),
    Mode("perplexity", ("segment_log_perplexity", "selected_spans_ids"),
         lambda r, n, seed, tau: top_k(r["segment_log_perplexity"], _as_many_as_selected(r)),
         "as many segments, the most surprising ones (attributor's log-perplexity)"),
    Mode("entropy", ("segment_entropy", "selected_spans_ids"),
         lambda r, n, seed, tau: top_k(r["segment_entropy"], _as_many_as_selected(r)),
         "as many segments, the most uncertain ones (attributor's entropy)"),
    Mode("oracle", ("segment_roles",),
         lambda r, n, seed, tau: [i for i, role in enumerate(r["segment_roles"]) if is_useful(role)],
         "the planted useful segments (testbed only)"),
    # controls matched in trained tokens, not segments (output length follows the tokens a mode trains)
    Mode("random-tokens", ("attributions", "selected_spans_ids"), _random_tokens,
         "random segments per trace, as many tokens as selective trains (attributor's tokens)"),
    Mode("length", ("attributions", "selected_spans_ids"), _longest,
         "the longest segments, as many tokens as selective trains (a length-only selector)"),
)
REGISTRY: dict[str, Mode] = {m.name: m for m in _TABLE}
MODES = tuple(REGISTRY)  # the order notebooks and reports list them in


def get(name: str) -> Mode:
    """The row of mode ``name``; an unknown name is a ValueError that lists the modes."""
    if name not in REGISTRY:
        raise ValueError(f"unknown mode {name!r}; choose one of {', '.join(MODES)}")
    return REGISTRY[name]


def describe(name: str) -> str:
    """What mode ``name`` trains, in one line (for notebooks and reports)."""
    return get(name).description


def segments_for_mode(record: dict, mode: str, seed: int = 0, tau: float = TAU, keywords="paper") -> list[int]:
    """Sorted indices of the segments ``mode`` trains, before the always-kept ones are added. A missing field is
    a ValueError that names it and where it comes from."""
    row = get(mode)
    n = len(segments_of(record, keywords))
    for name in row.needs:
        if name not in record:
            raise ValueError(f"mode {mode!r} needs the record field {name!r} ({HINTS[name]}); record "
                             f"{record.get('id')!r} lacks it")
    chosen = sorted(set(int(i) for i in row.pick(record, n, seed, tau)))
    if chosen and not 0 <= chosen[0] <= chosen[-1] < n:
        raise ValueError(f"record {record.get('id')!r}: segment index out of range 0..{n - 1} for mode {mode!r}")
    return chosen


def unavailable(names: Sequence[str], records: Sequence[dict]) -> dict[str, str]:
    """``{mode: why it cannot run on records}`` for the modes among ``names`` that need a field no segkit stage
    makes (the planted roles) and some record lacks. Fields a stage makes (selection, attribution) are left to the
    stages: a pipeline runs them first."""
    out = {}
    for name in names:
        for need in get(name).needs:
            if need not in MADE_BY and any(need not in r for r in records):
                out[name] = f"needs the field {need!r} ({HINTS[need]})"
                break
    return out

"""The functional testbed (``segkit synth --roles functional``): roles that only function reveals.

Every segment but the final one is the same derivation template, ``<opener> f = d + 4 = 3 + 4, so f = 7``, of one
of the problem's variables, its opener drawn independently of the role; a truncated segment stops before the value
(``so f = ?``), at the same length. A reader runs the trace as a program: a derivation computes its value from the
latest values of its operands (the givens come from the question) and stores it, and the final segment reads the
target. A segment is **useful** when the answer depends on it: corrupting the value it stores changes the answer
the trace reaches (``changes_answer``, the executable definition). Roles follow from that alone:

    core        the first derivation of a needed variable, read on the way to the answer
    verify      a needed variable derived again, and this derivation (not the earlier one) is the one read
    repeat      a needed variable derived where nothing reads it: overwritten before use, or after its last use
    distractor  a variable the answer does not need       truncated   a derivation that stops before its value
    final       the last segment, as in the worded testbed (``restate_answer``)

A verify and a repeat are the same text of the same value; only whether a later step reads it differs. There is
no ``correction``: a wrong value would be a derivation whose number disagrees with its operands, which a reader
that recomputes ignores (``correction_rate`` has no effect here). ``style="concise"`` writes the useful path only.

    >>> rec = make_records(SynthConfig(out="", n=1, roles="functional"))[0]     # from segkit.synth
    >>> [changes_answer(rec, i) for i in range(len(rec["segment_roles"]) - 1)]
"""
from __future__ import annotations

import random
import re

from typing import Callable, Sequence

from .roles import USEFUL
from .segment import segment

# the arithmetic of both testbeds (segkit.synth imports it from here, so that this module needs nothing from there)
OPS = {"+": lambda x, y, m: (x + y) % m, "-": lambda x, y, m: (x - y) % m, "*": lambda x, y, m: (x * y) % m}
# after the answer's own step, a verify re-derives the answer; at the mix's full weight the derivation the final
# segment reads would sit late in most traces, and position alone would point at it (ROC-AUC of relative position
# on the segments auc_table scores, chain_length 2: 0.61 at full weight, 0.55 at half)
ANSWER_VERIFY = 0.5
UNKNOWN = "?"  # what a truncated derivation writes where the value would be
DERIVATION = re.compile(r"(\w) = (\w+) ([-+*]) (\w+) = \d+ [-+*] \d+, so \1 = (\d+|\?)")


def functional_trace(rng: random.Random, p, cfg, mix: dict[str, float], openers: Sequence[str],
                     final_segment: Callable) -> tuple[str, list[str]] | None:
    """``(solution, segment_roles)`` for problem ``p`` (``segkit.synth.Problem``, options ``cfg``), or None for the
    few problems where an operation erases a value the answer reads (a product with 0 modulo ``p.modulus``,
    ``x - x``): there the data flow and ``changes_answer`` would disagree, and the caller draws another problem.
    ``openers`` and ``final_segment(rng, p, cfg)`` are the worded testbed's, so both read alike.

    After each step of the useful path (each needed variable derived once, in order), redundant segments are drawn
    from ``mix`` by what they do: ``verify`` derives the latest needed variable again, ``repeat`` a needed variable
    after its last read, ``distractor`` an unneeded one, ``truncated`` any of them without its value. The roles are
    then read off the data flow, not off what was drawn (a verify turns the derivation it replaces into a repeat)."""
    V, needed = p.variables, p.needed
    known = {n for n, v in V.items() if v.op is None}          # variables with a value so far
    steps: list[tuple[str, bool]] = []                          # (variable, states its value) per segment
    kinds, weights = zip(*mix.items())

    def ready(name):
        return all(isinstance(a, int) or a in known for a in V[name].args)

    def emit(name, with_value=True):
        steps.append((name, with_value))
        if with_value:
            known.add(name)

    for k in range(len(needed) + 1):            # gap k comes before needed[k] (the last gap before the final)
        later = needed[k:]
        read_later = {a for n in later for a in V[n].args} | {p.target}
        count = 0
        # none before the first step: nothing is known there, so every segment would be redundant and early
        while k and cfg.style == "long" and rng.random() < cfg.redundant / (1 + cfg.redundant):
            count += 1
        for _ in range(count):
            candidates = {"verify": [needed[k - 1]],
                          "repeat": [n for n in needed[:k] if n not in read_later],  # after its last read
                          "truncated": [n for n in needed[:k + 1] + p.distractors if ready(n)],
                          "distractor": [e for e in p.distractors if ready(e)]}
            # a kind with nothing to derive here is not drawn (rather than replaced by another), so that no kind
            # gathers where the others cannot go
            open_weights = [w * (ANSWER_VERIFY if x == "verify" and not later else 1) if candidates[x] else 0
                            for x, w in zip(kinds, weights)]
            kind = rng.choices(kinds, open_weights)[0] if sum(open_weights) else "truncated"
            emit(rng.choice(candidates[kind]), with_value=kind != "truncated")
        if k < len(needed):
            emit(needed[k])
    texts = [rng.choice(openers) + _derivation(p, V[n], with_value) for n, with_value in steps]
    texts[0] = texts[0].lstrip("\n")  # the trace opens like any segment, without the break a keyword follows
    roles = _roles(p, steps) + ["final"]
    record = {"question": p.question(), "solution": "".join(texts) + final_segment(rng, p, cfg)}
    if any(changes_answer(record, i) != (role in USEFUL) for i, role in enumerate(roles[:-1])):
        return None
    return record["solution"], roles


def _derivation(p, v, with_value: bool) -> str:
    return f" {v.name} ={p.expr(v)} ={p.subst(v)}, so {v.name} = {v.value if with_value else UNKNOWN}"


def _roles(p, steps: list[tuple[str, bool]]) -> list[str]:
    """Each segment's role from the data flow: which derivation each read takes its value from, back from the
    final segment's read of the target."""
    source: dict[str, int] = {}                 # variable -> the segment whose value a reader would take now
    reads: list[list[int]] = []
    for i, (name, with_value) in enumerate(steps):
        reads.append([source[a] for a in p.variables[name].args if isinstance(a, str) and a in source])
        if with_value:
            source[name] = i
    live, todo = set(), [source[p.target]]
    while todo:
        i = todo.pop()
        if i not in live:
            live.add(i)
            todo += reads[i]
    roles, derived = [], set()
    for i, (name, with_value) in enumerate(steps):
        if not with_value:
            roles.append("truncated")
        elif name not in p.needed:
            roles.append("distractor")
        else:
            roles.append(("verify" if name in derived else "core") if i in live else "repeat")
            derived.add(name)
    return roles


def answer_reached(record: dict, corrupt: int | None = None, shift: int = 1) -> int:
    """The answer ``record``'s trace reaches when read as a program (see the module docstring), with ``shift`` added
    (modulo) to the value segment ``corrupt`` stores (``None``: as written). Reads only the text."""
    return _run(_program(record), corrupt, shift)


def changes_answer(record: dict, i: int) -> bool:
    """Whether segment ``i`` is useful by function: some other value in its place changes the answer reached."""
    program = _program(record)
    reached = _run(program)
    return any(_run(program, i, shift) != reached for shift in range(1, program["modulus"]))


def _program(record: dict) -> dict:
    """The trace as a program: the givens and goal from the question, one derivation per segment that states one."""
    q = record["question"]
    m, target = re.search(r"modulo (\d+), what is (\w)\?", q).groups()
    givens = {n: int(v) for n, v in re.findall(r"(?:Let|Step \d+:) (\w) = (\d+)\.", q)}
    steps = [(i, found.groups()) for i, text in enumerate(segment(record["solution"]))
             if (found := DERIVATION.search(text)) and found.group(5) != UNKNOWN]
    return {"id": record.get("id"), "modulus": int(m), "target": target, "givens": givens, "steps": steps}


def _run(program: dict, corrupt: int | None = None, shift: int = 1) -> int:
    m, memory = program["modulus"], dict(program["givens"])

    def value(token: str) -> int:
        if token.isdigit():
            return int(token)
        if token not in memory:
            raise ValueError(f"{program['id']}: {token} is read before the trace derives it")
        return memory[token]

    for i, (name, a, op, b, stated) in program["steps"]:
        computed = OPS[op](value(a), value(b), m)
        if corrupt is None and computed != int(stated):
            raise ValueError(f"{program['id']}: segment {i} states {name} = {stated}, its operands give {computed}")
        memory[name] = (computed + shift) % m if i == corrupt else computed
    return value(program["target"])

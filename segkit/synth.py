"""The planted-role testbed: multi-step modular arithmetic problems and long traces whose segments have known roles.

A problem defines variables (given numbers, derived ones, and distractors the answer does not use) and asks for one
of them modulo ``modulus``. Its trace reads like a reasoning model's: a first segment that restates the goal and
takes the first step, then segments opened by the paper's reflection keywords, each with a planted ``role``:

    core        a step whose value the answer needs          verify      re-derives and confirms a needed value
    correction  a wrong value, then the fix used later       repeat      restates values already found
    truncated   an exploration that breaks off               distractor  work on values the answer does not use
    final       the last segment: states \\boxed{answer} (with ``restate_answer=0`` it concludes without the value,
                so the answer must be read off the steps: copying it from the last segment is no longer possible;
                a share between 0 and 1 mixes both endings, drawn per trace)

``style="concise"`` writes only the useful path (first step, core/correction steps, final): no redundant segments, as
a base model's short training traces; ``style="long"`` (the default) adds the redundant ones a reasoning model rambles.

``roles="functional"`` writes every segment in one derivation template, so that length, keywords, position and words
do not give a role away, and reads the roles off what the answer depends on (``segkit.synth_functional``); the
default ``roles="worded"`` gives each role its own wording, as above.

``segment_roles`` lines up one-to-one with ``segkit.segment.segment(solution)``; useful segments are those whose
role is in ``USEFUL``. Train and test problems are split by a hash of the question, so they never share a problem.

    >>> records = make_records(SynthConfig(out="", n=4, chain_length=2, style="concise", restate_answer=0))
    >>> run_synth(SynthConfig(out="data/synth/train.jsonl", n=4000))
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from .records import dump
from .segment import segment
from .synth_functional import OPS, functional_trace

from .roles import ROLES, USEFUL  # noqa: F401 (the vocabulary is shared: segkit.roles)
REDUNDANT = ("verify", "repeat", "truncated", "distractor")  # drawn between steps (verify: useful, yet redundant)
NAMES = tuple("bcdfghjkmnpqrstvwxyz")  # single letters that never stand for a word in the templates (no a, i, o...)
STYLES = ("long", "concise")
ROLE_DESIGNS = ("worded", "functional")  # how a role shows: its own wording, or only what the answer reads

# every segment after the first opens with one of the paper's keywords (segment.KEYWORDS["paper"]); the opener is
# drawn independently of the role, so the keyword alone does not give the role away
OPENERS = ("\n\nWait,", "\n\nWait, next", "\n\nAlternatively,", "\n\nBut wait,", "\n\nBut alternatively,",
           "\n\nBut just to be careful,", "\n\nHowever,", "\n\nNot sure yet, so", "\n\nGoing back,",
           "\n\nBacktrack:", "\n\nTrace back:", "\n\nAnother step:")


@dataclass
class Var:
    name: str
    op: str | None          # None for a given number
    args: tuple             # operands: variable names (str) or literals (int)
    value: int


@dataclass
class Problem:
    variables: dict[str, Var]
    needed: list[str]       # derived variables the answer needs, in the order the trace computes them
    distractors: list[str]
    order: list[str]        # order of the definitions in the question
    target: str
    modulus: int

    def expr(self, v: Var) -> str:
        return f" {v.args[0]} {v.op} {v.args[1]}"

    def subst(self, v: Var) -> str:
        return " " + f" {v.op} ".join(str(a if isinstance(a, int) else self.variables[a].value) for a in v.args)

    def label(self, name: str) -> str:
        """Needed steps are numbered ("Step 2: f = d + 4."), so the next step is found by its number rather than
        by tracking "the variable after the last one computed" through the redundant segments in between."""
        return f"Step {self.needed.index(name) + 1}:" if name in self.needed else "Let"

    def question(self) -> str:
        defs = " ".join(f"{self.label(n)} {n} ={self.expr(v) if v.op else ' ' + str(v.value)}."
                        for n, v in ((n, self.variables[n]) for n in self.order))
        return f"{defs} Working modulo {self.modulus}, what is {self.target}?"


@dataclass
class SynthConfig:
    out: str = field(metadata={"required": True, "help": "output JSON Lines (LIMO schema plus segment_roles)"})
    n: int = field(default=4000, metadata={"help": "number of problems"})
    seed: int = field(default=0, metadata={"help": "random seed (same seed, same bytes)"})
    split: str = field(default="train", metadata={"choices": ["train", "test"],
                                                  "help": "which side of the hash split of questions"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of the problem space that belongs to test"})
    chain_length: int = field(default=2, metadata={"help": "derived variables the answer needs (2 is the default "
                                                           "difficulty: see notebooks/params/default.yaml)"})
    distractors: int = field(default=1, metadata={"help": "variables defined in the question but not needed"})
    order: str = field(default="chain", metadata={"choices": ["chain", "shuffled"],
                                                  "help": "order of the definitions in the question"})
    modulus: int = field(default=10, metadata={"help": "all arithmetic is modulo this"})
    ops: str = field(default="+-*", metadata={"help": "operations the definitions use, among + - *"})
    redundant: float = field(default=2.0, metadata={"help": "mean number of redundant segments before each step"})
    correction_rate: float = field(default=0.15, metadata={"help": "share of steps taken wrongly, then fixed"})
    mix: str = field(default="verify=1,repeat=1,truncated=1,distractor=1",
                     metadata={"help": "relative rates of the redundant roles"})
    style: str = field(default="long", metadata={"choices": list(STYLES),
                                                 "help": "long: redundant segments between steps; concise: none "
                                                         "(the useful path only)"})
    roles: str = field(default="worded", metadata={
        "choices": list(ROLE_DESIGNS),
        "help": "worded: each role has its own wording; functional: every segment is one derivation template and "
                "only whether the answer reads it tells useful from redundant (segkit.synth_functional)"})
    restate_answer: float = field(default=1.0, metadata={
        "help": "share of traces whose final segment states the answer value and \\boxed{} (1: every trace; 0: "
                "none, the final segment concludes without the value; between: drawn per trace)"})

    def __post_init__(self):  # checked when built, so `segkit synth` answers before any work
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        self.restate_answer = float(self.restate_answer)  # true/false (YAML, Python) are 1 and 0
        if not 0 <= self.restate_answer <= 1:
            raise ValueError(f"restate_answer must be a share in [0, 1], got {self.restate_answer}")
        if not 0 <= self.redundant < float("inf") or not 0 <= self.correction_rate <= 1:
            raise ValueError(f"redundant must be >= 0 and correction_rate in [0, 1], got {self.redundant}, "
                             f"{self.correction_rate}")


def parse_mix(mix: str) -> dict[str, float]:
    try:
        rates = {k.strip(): float(v) for k, v in (item.split("=") for item in mix.split(",") if item.strip())}
    except ValueError:
        raise ValueError(f"mix {mix!r}: expected role=rate pairs such as 'verify=1,repeat=2'") from None
    unknown = set(rates) - set(REDUNDANT)
    if unknown or not any(r > 0 for r in rates.values()) or any(r < 0 for r in rates.values()):
        raise ValueError(f"mix {mix!r}: rates must be >= 0, not all 0, for roles among {REDUNDANT}")
    return rates


def make_problem(rng: random.Random, cfg: SynthConfig) -> Problem:
    """Two given numbers, a chain of ``chain_length`` derived variables (each uses the one before), and distractors."""
    m, ops = cfg.modulus, tuple(cfg.ops)
    names = rng.sample(NAMES, 2 + cfg.chain_length + cfg.distractors)
    variables: dict[str, Var] = {}

    def define(name, op, args):
        vals = [a if isinstance(a, int) else variables[a].value for a in args]
        variables[name] = Var(name, op, tuple(args), OPS[op](vals[0], vals[1], m) if op else vals[0])

    givens, derived, extra = names[:2], names[2:2 + cfg.chain_length], names[2 + cfg.chain_length:]
    for g in givens:
        define(g, None, (rng.randrange(1, m),))
    order = list(givens)
    prev = None
    for i, d in enumerate(derived):
        if i == 0:
            args = (givens[0], givens[1])
        else:
            other = rng.choice([rng.randrange(1, m), rng.choice(givens + derived[:i - 1] or givens)])
            args = (prev, other)
        define(d, rng.choice(ops), args)
        order.append(d)
        prev = d
    # a distractor is read by nothing needed and reads no needed step first; in chain order it comes after the
    # first step and after its operands, at a random place
    for j, e in enumerate(extra):
        first = rng.choice(givens + extra[:j])
        define(e, rng.choice(ops), (first, rng.choice([rng.randrange(1, m), rng.choice(order)])))
        first_ok = max([order.index(derived[0])] + [order.index(a) for a in variables[e].args if isinstance(a, str)])
        order.insert(rng.randint(first_ok + 1, len(order)), e)
    if cfg.order == "shuffled":
        rng.shuffle(order)
    return Problem(variables, list(derived), list(extra), order, derived[-1], m)


def _step(p: Problem, v: Var) -> str:
    # the value sits right after "name =", as in the question, so reading a value is one look-up by name
    return f"{v.name} ={p.expr(v)} ={p.subst(v)}, so {v.name} = {v.value}."


def _segment_text(rng: random.Random, p: Problem, role: str, done: list[str], nxt: str | None) -> str:
    """The body of one segment (after its opener) for ``role``; ``done`` = needed variables computed so far."""
    V = p.variables
    if role == "core":
        return f" {rng.choice(('', 'now ', 'on to '))}{p.label(nxt)} " + _step(p, V[nxt])
    if role == "correction":
        v = V[nxt]
        wrong = rng.choice([x for x in range(p.modulus) if x != v.value])
        return (f" {p.label(nxt)} {v.name} ={p.expr(v)} ={p.subst(v)}, so {v.name} = {wrong}."
                f" No, that is wrong:{p.subst(v)} = {v.value}, so {v.name} = {v.value}.")
    if role == "verify":
        v = V[rng.choice(done)]
        return f" let me check {v.name}. {_step(p, v)} Yes."
    if role == "repeat":
        said = sorted(rng.sample(done, min(len(done), rng.randint(1, 3))), key=done.index)
        return " we have " + " and ".join(f"{n} = {V[n].value}" for n in said) + "."
    if role == "truncated":
        v = V[rng.choice([nxt] if nxt else done)]
        words = f"maybe {v.name} ={p.expr(v)} ={p.subst(v)}".split(" ")
        return " " + " ".join(words[:rng.randint(3, len(words) - 1)])  # breaks off: no value, no period
    if role == "distractor":
        # only a distractor whose needed operands are already known: the trace never shows a value early
        ready = [e for e in p.distractors
                 if all(isinstance(a, int) or a in done or a not in p.needed for a in V[e].args)]
        if ready:
            return " " + rng.choice(("", "also ")) + _step(p, V[rng.choice(ready)])
        a, b = rng.sample(done, 2) if len(done) > 1 else (done[0], done[0])
        return f" also {a} + {b} = {V[a].value} + {V[b].value} = {(V[a].value + V[b].value) % p.modulus}."
    raise ValueError(f"unknown role {role!r}")


def make_trace(rng: random.Random, p: Problem, cfg: SynthConfig, mix: dict[str, float]) -> tuple[str, list[str]]:
    """``(solution, segment_roles)``: the first segment restates the goal and takes the first step."""
    first = p.variables[p.needed[0]]
    segments = [f"We need {p.target} modulo {p.modulus}. Start with {p.label(first.name)} {_step(p, first)}"]
    roles, done = ["core"], [p.needed[0]]
    kinds, weights = zip(*mix.items())

    def redundant(nxt):
        count = 0
        # geometric with mean cfg.redundant; a concise trace has none
        while cfg.style == "long" and rng.random() < cfg.redundant / (1 + cfg.redundant):
            count += 1
        for _ in range(count):
            role = rng.choices(kinds, weights)[0]
            segments.append(rng.choice(OPENERS) + _segment_text(rng, p, role, done, nxt))
            roles.append(role)

    for name in p.needed[1:]:
        redundant(name)
        role = "correction" if rng.random() < cfg.correction_rate else "core"
        segments.append(rng.choice(OPENERS) + _segment_text(rng, p, role, done, name))
        roles.append(role)
        done.append(name)
    redundant(None)
    segments.append(final_segment(rng, p, cfg))
    roles.append("final")
    return "".join(segments), roles


def final_segment(rng: random.Random, p: Problem, cfg: SynthConfig) -> str:
    """The last segment: the answer restated in \\boxed{} or, for a share ``1 - restate_answer`` of traces, not."""
    ans = p.variables[p.target].value
    # drawn only for a share strictly between 0 and 1, so the all-or-none files keep the same random stream
    restate = cfg.restate_answer >= 1 or (cfg.restate_answer > 0 and rng.random() < cfg.restate_answer)
    if restate:
        return f"\n\nGoing back, {p.target} = {ans}. So, the final answer is \\boxed{{{ans}}}."
    return f"\n\nGoing back, that gives {p.target}, which is what was asked."  # the value only in the steps


def in_split(question: str, split: str, test_fraction: float) -> bool:
    """Train/test membership from the question text alone, so two files never share a problem."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 16 ** 8
    return (bucket < test_fraction) == (split == "test")


def make_records(cfg: SynthConfig) -> list[dict]:
    """``cfg.n`` distinct problems of ``cfg.split`` as LIMO-schema records (``id``, ``question``, ``solution``,
    ``answer``) plus ``segment_roles``, one role per ``segkit.segment.segment(solution)`` segment."""
    if cfg.split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {cfg.split!r}")
    if cfg.style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {cfg.style!r}")
    if cfg.roles not in ROLE_DESIGNS:
        raise ValueError(f"roles must be one of {', '.join(ROLE_DESIGNS)}, not {cfg.roles!r}")
    if cfg.chain_length < 1 or cfg.modulus < 2 or not 0 < cfg.test_fraction < 1:
        raise ValueError("need chain_length >= 1, modulus >= 2 and 0 < test_fraction < 1")
    if not cfg.ops or set(cfg.ops) - set(OPS):
        raise ValueError(f"ops {cfg.ops!r}: use some of {''.join(OPS)}")
    if 2 + cfg.chain_length + cfg.distractors > len(NAMES):
        raise ValueError(f"chain_length + distractors must be at most {len(NAMES) - 2} (one letter per variable)")
    mix = parse_mix(cfg.mix)
    rng = random.Random(f"synth:{cfg.seed}:{cfg.split}")
    records, seen, tries = [], set(), 0
    while len(records) < cfg.n:
        tries += 1
        if tries > 200 * cfg.n + 1000:
            raise ValueError(f"only {len(records)} distinct {cfg.split} problems found; make the problems larger")
        p = make_problem(rng, cfg)
        q = p.question()
        if q in seen or not in_split(q, cfg.split, cfg.test_fraction):
            continue
        seen.add(q)
        if cfg.roles == "functional":
            made = functional_trace(rng, p, cfg, mix, OPENERS, final_segment)
            if made is None:  # an operation erased a value the answer reads (see functional_trace)
                continue
            solution, roles = made
        else:
            solution, roles = make_trace(rng, p, cfg, mix)
        assert len(segment(solution)) == len(roles)  # the planted roles are only worth anything if this holds
        records.append({"id": f"synth-{cfg.split}-{len(records):05d}", "question": q, "solution": solution,
                        "answer": str(p.variables[p.target].value), "segment_roles": roles})
    return records


def run_synth(cfg: SynthConfig) -> str:
    records = make_records(cfg)
    dump(records, cfg.out)
    n_seg = sum(len(r["segment_roles"]) for r in records)
    useful = sum(x in USEFUL for r in records for x in r["segment_roles"])
    words = sum(len(r["solution"].split()) for r in records)
    return (f"wrote {len(records)} {cfg.split} problems to {cfg.out}: {n_seg / len(records):.1f} segments and "
            f"{words / len(records):.0f} words per trace, {useful / n_seg:.0%} of segments useful")

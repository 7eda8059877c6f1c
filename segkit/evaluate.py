"""Stage 6 -- evaluate: generate answers to benchmark problems, grade them with math-verify, score the model.

Per benchmark file: accuracy avg@n (mean correctness over all n samples of all problems), unbiased pass@k and
mean output length in tokens. One record per problem is appended to OUT as soon as it is graded, so a rerun
resumes where an interrupted one stopped; the table goes to OUT with the suffix ``.summary.json``.

    >>> run_evaluate(EvalConfig(model="runs/selective", data=["data/math500.jsonl", "data/aime24.jsonl"],
    ...                         n=4, temperature=0.6, out="runs/eval.jsonl"))
    'math500: avg@4 ..., pass@4 ..., ... tokens (500 problems); aime24: ... -> runs/eval.summary.json'
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from math import comb
from pathlib import Path
from statistics import fmean
from typing import Iterable

from .prompt import ANSWER_TEMPLATE, encode, format_prompt
from .records import RecordError, finished_ids, load, read_jsonl

log = logging.getLogger("segkit")

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_LETTER = re.compile(r"^\W*([A-J])(?![A-Za-z])", re.IGNORECASE)  # "A", "(A)", "A)", "$A$", "A. 42"
_MC_GOLD = re.compile(r"^\(?[A-J]\)?$")
_DEPTH = {"{": 1, "}": -1}
_MATH_ENV = re.compile(r"(?<!\\)\$|\\boxed")  # an unescaped $ (not "\$5") or a box


def extract_answer(text: str) -> str | None:
    """The content of the last closed ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces balanced; else None.

    A last box left open (a generation cut at ``max_new_tokens``) does not count: the one before it does.
    """
    for m in reversed(list(_BOX.finditer(text))):
        depth = 1
        for i in range(m.end(), len(text)):
            depth += _DEPTH.get(text[i], 0)
            if depth == 0:
                return text[m.end():i].strip()
    return None


def _letter(answer: str) -> str | None:
    m = _LETTER.match(_TEXT_CMD.sub(r"\1", answer).strip())
    return m.group(1).upper() if m else None


@lru_cache(maxsize=4096)  # a problem's gold, and the answers its n samples share, are parsed once
def _parse(answer: str, timeout: int | None) -> list:
    from math_verify import parse

    # math-verify reads LaTeX only inside math delimiters; a bare answer goes in \boxed{}, its surest pattern
    latex = answer if _MATH_ENV.search(answer) else f"\\boxed{{{answer}}}"
    return parse(latex, parsing_timeout=timeout)


def grade(pred: str | None, gold: str, multiple_choice: bool = False) -> bool:
    """Whether ``pred`` (a box's content) equals ``gold``: by math-verify, or by letter if multiple choice.

    math-verify's timeouts use ``signal.alarm``, which only the main thread may set; elsewhere (a thread pool,
    a server) grading runs without a timeout, so a pathological expression can take long.
    """
    if pred is None:
        return False
    if multiple_choice:
        letter = _letter(pred)
        return letter is not None and letter == _letter(gold)
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return verify(_parse(gold, timeout), _parse(pred, timeout), timeout_seconds=timeout)  # gold first: asymmetric


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def evaluate_samples(records: Iterable[dict]) -> dict[str, dict]:
    """Per dataset: ``n_problems``, ``n_samples`` (per problem), ``accuracy`` (avg@n over all samples),
    ``pass@k`` for k = 1, 2, 4, ... up to n, and ``mean_length`` (tokens, over all samples)."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_dataset[r.get("dataset", "all")].append(r)
    table = {}
    for name, recs in by_dataset.items():
        n = min(len(r["correct"]) for r in recs)
        row = {"n_problems": len(recs), "n_samples": n,
               "accuracy": fmean(float(c) for r in recs for c in r["correct"])}
        k = 1
        while k <= n:
            row[f"pass@{k}"] = fmean(pass_at_k(len(r["correct"]), sum(r["correct"]), k) for r in recs)
            k *= 2
        row["mean_length"] = fmean(t for r in recs for t in r["n_tokens"])
        table[name] = row
    return table


def read_benchmark(path) -> list[dict]:
    """The problems of a benchmark file as ``{"id", "question", "gold"}``.

    The question is ``problem`` or ``question`` (with ``options``/``choices`` appended as ``A) ...`` when given as a
    list); the gold is ``answer`` or ``final_answer`` (OlympiadBench's list joined), else the last box of ``solution``.
    """
    problems = []
    for line, rec in read_jsonl(path):
        question = next((rec[k] for k in ("problem", "question") if k in rec), None)
        gold = next((rec[k] for k in ("answer", "final_answer") if rec.get(k) is not None), None)
        if gold is None and isinstance(rec.get("solution"), str):
            gold = extract_answer(rec["solution"])
        if not isinstance(question, str) or gold is None:
            raise RecordError(path, line, "need a question ('problem' or 'question') and a gold answer "
                                          "('answer', 'final_answer' or a \\boxed{} in 'solution')")
        options = rec.get("options", rec.get("choices"))
        if isinstance(options, list):
            question += "\n\n" + "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))
        gold = ", ".join(map(str, gold)) if isinstance(gold, list) else str(gold)
        problems.append({"id": str(rec["id"]), "question": question, "gold": gold.strip()})
    return problems


def left_pad(seqs: list[list[int]], pad: int, device=None):
    """``(input_ids, attention_mask)``, both ``(B, T)``: token lists padded on the left, as generation needs."""
    import torch

    width = max(map(len, seqs))
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask


def generate(model, tokenizer, questions: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 32768, batch_size: int = 8, seed: int = 0) -> list[list[dict]]:
    """``n`` completions per question, each ``{"text", "n_tokens"}`` (tokens generated before eos/pad).

    Greedy when ``temperature == 0``: one generation per question, copied ``n`` times (they would be identical).
    Sampling draws from ``temperature`` and ``top_p`` only (no top-k). Rows are left-padded into batches of
    ``batch_size`` sequences; the same seed and batch size give the same samples.
    """
    import torch

    greedy = temperature == 0
    prompts = [tokenizer(format_prompt(tokenizer, q), add_special_tokens=False)["input_ids"] for q in questions]
    eos = model.generation_config.eos_token_id
    eos = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    stop = eos | {pad}
    sampling = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
    torch.manual_seed(seed)

    jobs = [i for i, _ in enumerate(prompts) for _ in range(1 if greedy else n)]  # a question per sequence
    out: list[list[dict]] = [[] for _ in questions]
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b:b + batch_size]
        ids, mask = left_pad([prompts[i] for i in batch], pad, model.device)  # (B, T)
        width = ids.shape[1]
        seqs = model.generate(input_ids=ids, attention_mask=mask,
                              do_sample=not greedy, max_new_tokens=max_new_tokens, eos_token_id=sorted(eos),
                              pad_token_id=pad, **sampling)[:, width:].tolist()  # (B, new tokens)
        for i, row in zip(batch, seqs):
            n_tokens = next((t for t, tok in enumerate(row) if tok in stop), len(row))
            out[i].append({"text": tokenizer.decode(row[:n_tokens], skip_special_tokens=True),
                           "n_tokens": n_tokens})
    return [[dict(s[0]) for _ in range(n)] for s in out] if greedy else out


def answer_after_trace(model, tokenizer, records: list[dict], answer_template: str = ANSWER_TEMPLATE,
                       batch_size: int = 32) -> list[bool]:
    """Per record: reading prompt + gold ``solution`` + the answer string up to the answer (``</think> So, the
    final answer is \\boxed{``), does the model greedily write the gold ``answer`` and close the brace? This is
    what the IG target asks of an attributor: that it reads the answer off the trace it is given."""
    import torch

    head, tail = answer_template.split("ANSWER", 1)
    seqs, wanted = [], []
    for r in records:
        seqs.append(encode(tokenizer, format_prompt(tokenizer, r["question"]))[0] +
                    encode(tokenizer, r["solution"] + head)[0])
        wanted.append(str(r["answer"]) + tail[:1])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for b in range(0, len(seqs), batch_size):
        batch, want = seqs[b:b + batch_size], wanted[b:b + batch_size]
        ids, mask = left_pad(batch, pad, model.device)
        width = ids.shape[1]
        n_new = max(len(encode(tokenizer, w)[0]) for w in want) + 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                                 pad_token_id=pad)[:, width:]
        out += [tokenizer.decode(g, skip_special_tokens=True).startswith(w) for g, w in zip(gen.tolist(), want)]
    return out


@dataclass
class EvalConfig:
    model: str = field(default="", metadata={"help": "model folder, hub id or segkit alias", "required": True})
    data: list[str] = field(default_factory=list, metadata={
        "help": "benchmark JSON Lines files (MATH500, AIME24, AMC23, GPQA-Diamond, Minerva, OlympiadBench...); "
                "each file is one dataset, named by its stem"})
    out: str = field(default="runs/eval.jsonl", metadata={
        "help": "per-problem samples, answers, correctness and lengths (JSON Lines; rerun to resume); "
                "the table goes next to it as .summary.json"})
    n: int = field(default=1, metadata={"help": "samples per problem (avg@n, pass@k)"})
    temperature: float = field(default=0.0, metadata={
        "help": "0 is greedy (one generation copied n times); DeepSeek-R1 recommends 0.6 with top-p 0.95"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold (when temperature > 0)"})
    max_new_tokens: int = field(default=32768, metadata={"help": "generation budget per sample"})
    batch_size: int = field(default=8, metadata={"help": "sequences generated together"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="auto", metadata={"help": "cuda, cpu, mps or auto"})
    dtype: str = field(default="auto", metadata={"help": "bfloat16, float16, float32 or auto"})
    limit: int = field(default=0, metadata={"help": "evaluate only the first LIMIT problems of each file (0: all)"})
    multiple_choice: str = field(default="auto", metadata={
        "help": "grade letters A-J instead of maths; auto: when every gold answer of a file is a single letter",
        "choices": ["auto", "yes", "no"]})
    overwrite: bool = field(default=False, metadata={"help": "start OUT afresh instead of resuming"})


def _summary_line(table: dict[str, dict]) -> str:
    def row(name, r):
        k = 1 << (r["n_samples"].bit_length() - 1)  # the largest power of two reported
        return (f"{name}: avg@{r['n_samples']} {r['accuracy']:.3f}, pass@{k} {r[f'pass@{k}']:.3f}, "
                f"{r['mean_length']:.0f} tokens ({r['n_problems']} problems)")
    return "; ".join(row(name, r) for name, r in table.items())


def run_evaluate(cfg: EvalConfig) -> str:
    """Generate, grade and append one record per problem to ``cfg.out``; write the summary table; return one line."""
    from tqdm.auto import tqdm

    if not cfg.model or not cfg.data:
        raise ValueError("need a model and at least one benchmark: pass --model M --data FILE [FILE ...]")
    if cfg.n < 1 or cfg.batch_size < 1:
        raise ValueError("n and batch_size must be at least 1")
    datasets: dict[str, list[dict]] = {}
    for path in cfg.data:
        name = Path(path).stem
        if name in datasets:
            raise ValueError(f"two benchmark files are named {name!r}; rename one (records are keyed by file stem)")
        datasets[name] = read_benchmark(path)[:cfg.limit or None]

    out = Path(cfg.out)
    if cfg.overwrite and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set(finished_ids(out))
    todo = {name: [p for p in problems if f"{name}/{p['id']}" not in done] for name, problems in datasets.items()}
    if any(todo.values()):
        from .models import load_model

        model, tokenizer = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
        per_call = max(1, cfg.batch_size // (1 if cfg.temperature == 0 else cfg.n))  # problems per generate call
        with out.open("a", encoding="utf-8") as f, tqdm(total=sum(map(len, todo.values())), unit="problem",
                                                          desc="evaluate") as bar:
            for name, pending in todo.items():
                golds = [p["gold"] for p in datasets[name]]
                mc = cfg.multiple_choice == "yes" or (cfg.multiple_choice == "auto" and
                                                      all(_MC_GOLD.match(g) for g in golds))
                pending.sort(key=lambda p: len(p["question"]), reverse=True)  # similar lengths share a batch
                for b in range(0, len(pending), per_call):
                    part = pending[b:b + per_call]
                    samples = generate(model, tokenizer, [p["question"] for p in part], n=cfg.n,
                                       temperature=cfg.temperature, top_p=cfg.top_p,
                                       max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                       seed=cfg.seed + b)
                    for p, ss in zip(part, samples):
                        answers = [extract_answer(s["text"]) for s in ss]
                        rec = {"id": f"{name}/{p['id']}", "dataset": name, "question": p["question"],
                               "gold": p["gold"], "multiple_choice": mc, "samples": [s["text"] for s in ss],
                               "answers": answers, "correct": [grade(a, p["gold"], mc) for a in answers],
                               "n_tokens": [s["n_tokens"] for s in ss]}
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        f.flush()
                    bar.update(len(part))

    # the table covers exactly this configuration's problems, including those resumed from an earlier run
    wanted = {f"{name}/{p['id']}" for name, problems in datasets.items() for p in problems}
    table = evaluate_samples(r for r in load(out) if r["id"] in wanted)
    summary = out.with_suffix(".summary.json")
    summary.write_text(json.dumps({"config": asdict(cfg), "datasets": table}, indent=2) + "\n", encoding="utf-8")
    return f"{_summary_line(table)} -> {summary}"

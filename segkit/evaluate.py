"""Stage 6 -- evaluate: generate answers to benchmark problems, grade them with math-verify, score the model.

Per benchmark file: accuracy avg@n (mean correctness over all n samples of all problems), unbiased pass@k and
mean output length in tokens. One record per problem is appended to OUT as soon as it is graded, so a rerun
resumes where an interrupted one stopped; the table goes to OUT with the suffix ``.summary.json``.

    >>> run_evaluate(EvalConfig(model="runs/selective", data=["data/math500.jsonl", "data/aime24.jsonl"],
    ...                         n=4, temperature=0.6, out="runs/eval.jsonl"))
    'math500: avg@4 ..., pass@4 ..., ... tokens (500 problems); aime24: ... -> runs/eval.summary.json'
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from math import comb
from pathlib import Path
from statistics import fmean
from typing import Iterable

from .generation import ENGINES, check_engine, load_engine, vllm_here, vllm_segkit
from .prompt import ANSWER_TEMPLATE, assemble
from .records import (RecordError, atomic_write, check_output, check_resume, finished_ids, load, owner, rank_world,
                      read_jsonl, run_stage, shard_path, to_line, write_json)

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


def answer_after_trace(model, tokenizer, records: list[dict], answer_template: str = ANSWER_TEMPLATE,
                       batch_size: int = 32) -> list[bool]:
    """Per record: reading prompt + gold ``solution`` + the answer string up to the answer (``</think> So, the
    final answer is \\boxed{``), does the model greedily write the gold ``answer`` and close the brace? This is
    what the IG target asks of an attributor: that it reads the answer off the trace it is given. The input is
    ``prompt.assemble``'s, cut before the first answer token, so it is token for token what attribution reads."""
    import torch

    from .generation import left_pad
    from .models import pad_token_id

    seqs, rests = [], []
    for r in records:
        parts = assemble(tokenizer, r["question"], [r["solution"]], r["answer"], answer_template)
        ids, first = parts.input_ids.tolist(), int(parts.targets[0])
        seqs.append(ids[:first])
        rests.append(ids[first:])  # the answer's tokens and what closes the template (the brace)
    pad = pad_token_id(tokenizer)
    out = []
    for b in range(0, len(seqs), batch_size):
        batch, rest = seqs[b:b + batch_size], rests[b:b + batch_size]
        ids, mask = left_pad(batch, pad, model.device)
        width = ids.shape[1]
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max(map(len, rest)) + 1, pad_token_id=pad)[:, width:]
        out += [tokenizer.decode(g, skip_special_tokens=True).startswith(tokenizer.decode(w))
                for g, w in zip(gen.tolist(), rest)]
    return out


@dataclass
class EvalConfig:
    model: str = field(default="", metadata={"help": "model folder, hub id or segkit alias", "required": True})
    data: list[str] = field(default_factory=list, metadata={
        "help": "benchmark JSON Lines files (MATH500, AIME24, AMC23, GPQA-Diamond, Minerva, OlympiadBench...); "
                "each file is one dataset, named by its stem"})
    out: str = field(default="runs/eval.jsonl", metadata={
        "help": "per-problem samples, answers, correctness and lengths (JSON Lines; rerun to resume); "
                "the table goes next to it as .summary.json, the problem list as .problems.jsonl"})
    engine: str = field(default="hf", metadata={"choices": list(ENGINES), "help": "hf: transformers generate "
                        "(the CPU default); vllm: vLLM's offline engine (`make vllm` builds .venv-vllm with it)"})
    n: int = field(default=1, metadata={"help": "samples per problem (avg@n, pass@k)"})
    temperature: float = field(default=0.0, metadata={
        "help": "0 is greedy (one generation copied n times); DeepSeek-R1 recommends 0.6 with top-p 0.95"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold (when temperature > 0)"})
    max_new_tokens: int = field(default=32768, metadata={"help": "generation budget per sample"})
    batch_size: int = field(default=8, metadata={"help": "sequences generated together (hf)"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="auto", metadata={"help": "cuda, cpu, mps or auto (hf)"})
    dtype: str = field(default="auto", metadata={"help": "bfloat16, float16, float32 or auto"})
    tensor_parallel_size: int = field(default=1, metadata={
        "help": "GPUs one vLLM engine spans (vllm); data parallel is the processes of torchrun/accelerate"})
    gpu_memory_utilization: float = field(default=0.0, metadata={
        "help": "share of GPU memory vLLM takes, of RAM on a CPU build (vllm; 0: 0.9 on a GPU, 0.3 on a CPU)"})
    limit: int = field(default=0, metadata={"help": "evaluate only the first LIMIT problems of each file (0: all)"})
    multiple_choice: str = field(default="auto", metadata={
        "help": "grade letters A-J instead of maths; auto: when every gold answer of a file is a single letter",
        "choices": ["auto", "yes", "no"]})
    overwrite: bool = field(default=False, metadata={"help": "start OUT afresh instead of resuming"})

    def __post_init__(self):
        check_engine(self.engine)
        check_eval_options(vars(self))


def check_eval_options(o: Mapping) -> None:
    """Raise ``ValueError`` (one line) for generation options that cannot run, from their values alone: no file,
    engine or device is looked at (``EvalConfig`` checks the engine first). ``o`` maps EvalConfig's fields to values
    (model, data and out are not read); ``PipelineConfig`` checks its ``generate`` options, over the defaults, here."""
    if min(o["n"], o["batch_size"], o["tensor_parallel_size"], o["max_new_tokens"]) < 1:
        raise ValueError("--n, --batch-size, --tensor-parallel-size and --max-new-tokens must be at least 1")
    if o["limit"] < 0:  # rows[:-1] would drop the last problem
        raise ValueError(f"--limit must be at least 1, or 0 for every problem; got {o['limit']}")
    if not 0 <= o["temperature"] < float("inf") or not 0 < o["top_p"] <= 1:
        raise ValueError(f"--temperature must be >= 0 and --top-p in (0, 1], got {o['temperature']}, {o['top_p']}")
    if not 0 <= o["gpu_memory_utilization"] <= 1:
        raise ValueError("--gpu-memory-utilization is a share in (0, 1] (0: automatic)")


def _summary_line(table: dict[str, dict]) -> str:
    def row(name, r):
        k = 1 << (r["n_samples"].bit_length() - 1)  # the largest power of two reported
        return (f"{name}: avg@{r['n_samples']} {r['accuracy']:.3f}, pass@{k} {r[f'pass@{k}']:.3f}, "
                f"{r['mean_length']:.0f} tokens ({r['n_problems']} problems)")
    return "; ".join(row(name, r) for name, r in table.items())


def problem_list(cfg: EvalConfig) -> list[dict]:
    """Every problem to evaluate as a record ``{"id": "<file stem>/<id>", "dataset", "question", "gold",
    "multiple_choice"}``, in file order: the input ``records.run_stage`` shards, resumes and merges by."""
    problems, names = [], set()
    for path in cfg.data:
        name = Path(path).stem
        if name in names:
            raise ValueError(f"two benchmark files are named {name!r}; rename one (records are keyed by file stem)")
        names.add(name)
        rows = read_benchmark(path)
        if not rows:
            raise ValueError(f"{path}: holds no problems (empty, or blank lines only)")
        golds = [p["gold"] for p in rows]  # the whole file decides, whatever --limit takes
        mc = cfg.multiple_choice == "yes" or (cfg.multiple_choice == "auto" and all(_MC_GOLD.match(g) for g in golds))
        problems += [{"id": f"{name}/{p['id']}", "dataset": name, "question": p["question"], "gold": p["gold"],
                      "multiple_choice": mc} for p in rows[:cfg.limit or None]]
    return problems


# options that do not change a problem's record (data and limit choose which problems; each is keyed by id)
NOT_RESULT_OPTIONS = ("data", "limit", "out", "overwrite", "batch_size", "device", "tensor_parallel_size",
                      "gpu_memory_utilization")


class EngineError(RuntimeError):
    """``segkit evaluate`` in the vLLM environment failed (its own one-line message is printed above)."""


ERRORS = (EngineError,)  # printed as one line by segkit.cli


def _run_in_vllm_env(cfg: EvalConfig) -> str:
    """``segkit evaluate`` with the same options in the environment that has vLLM (``make vllm``); same records."""
    import subprocess

    from .commands import to_argv

    cmd = [vllm_segkit(), "evaluate", *to_argv(cfg)]
    log.info("vLLM is not installed here: running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    except OSError as e:  # not a program, not executable
        raise EngineError(f"{cmd[0]}: cannot run it ({e.strerror}); rebuild it with `make vllm`") from None
    if done.returncode != 0:
        raise EngineError(f"{cmd[0]} evaluate failed (exit {done.returncode}); its message is above")
    # success is what it wrote, not its exit code: this rank's problems are all in OUT or this rank's shard
    rank, world = rank_world()
    out = Path(cfg.out)
    have = set(finished_ids(out)) | set(finished_ids(shard_path(out, rank, world)))
    missing = [p["id"] for p in problem_list(cfg) if (world == 1 or owner(p["id"], world) == rank)
               and p["id"] not in have]
    if missing:
        raise EngineError(f"{cmd[0]} evaluate exited 0 but {out} lacks {len(missing)} problem(s) (first: "
                          f"{missing[0]}); rerun to resume")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "done"


def run_evaluate(cfg: EvalConfig) -> str:
    """Generate, grade and append one record per problem to ``cfg.out`` through ``records.run_stage`` (under
    torchrun/accelerate each rank takes its share); write the summary table; return one line."""
    if not cfg.model or not cfg.data:
        raise ValueError("need a model and at least one benchmark: pass --model M --data FILE [FILE ...]")
    out = check_output(cfg.out, *cfg.data)
    for derived in (out.with_name(out.stem + ".problems.jsonl"), out.with_suffix(".summary.json")):
        check_output(derived, *cfg.data)  # written next to OUT: never a benchmark either
    if cfg.engine == "vllm" and not vllm_here():  # vLLM pins its own transformers: it lives in .venv-vllm
        return _run_in_vllm_env(cfg)
    options = {"stage": "evaluate", **{k: v for k, v in asdict(cfg).items() if k not in NOT_RESULT_OPTIONS}}
    if not cfg.overwrite:
        check_resume(out, options)  # before the model loads or anything beside OUT is written
    from .models import locate  # (imports torch: not at module level, so --help answers at once)

    locate(cfg.model)  # a path that is no model is said before anything is written
    problems = problem_list(cfg)
    src = out.with_name(out.stem + ".problems.jsonl")
    text = "".join(to_line(p) for p in problems)
    if not src.exists() or src.read_text(encoding="utf-8") != text:  # every rank writes the same bytes
        with atomic_write(src) as f:
            f.write(text)
    sample = batched_sampler(cfg, out, problems)

    def evaluate_problem(p: dict) -> dict:
        samples = sample(p)
        answers = [extract_answer(s["text"]) for s in samples]
        return {**p, "samples": [s["text"] for s in samples], "answers": answers,
                "correct": [grade(a, p["gold"], p["multiple_choice"]) for a in answers],
                "n_tokens": [s["n_tokens"] for s in samples]}

    res = run_stage(evaluate_problem, src, out, required=("question", "gold"), overwrite=cfg.overwrite,
                    options=options, desc="evaluate")
    wanted = [p["id"] for p in problems]
    have = set(finished_ids(out)) if out.exists() else set()
    if not have.issuperset(wanted):  # another rank merges once every shard is complete
        rank, world = rank_world()
        return f"rank {rank} of {world}: {res.done} problems evaluated, {res.resumed} resumed -> {out}"
    # the table covers exactly this configuration's problems, including those resumed from an earlier run
    table = evaluate_samples(r for r in load(out) if r["id"] in set(wanted))
    summary = out.with_suffix(".summary.json")
    report = {"config": asdict(cfg), "datasets": table, "timing": sample.timing}
    write_json(report, summary)
    return f"{_summary_line(table)} -> {summary}"


def batched_sampler(cfg: EvalConfig, out: Path, problems: list[dict]):
    """``sample(problem) -> samples``, called by ``run_stage`` one problem at a time in input order. On a miss
    it samples a batch at once: this problem and the next ones this rank will be asked for (its share, not yet
    in OUT or its shard), so the engine sees full batches. The engine is loaded only if this rank has work."""
    rank, world = rank_world()
    done = set() if cfg.overwrite else set(finished_ids(out)) | set(finished_ids(shard_path(out, rank, world)))
    mine = [p for p in problems if (world == 1 or owner(p["id"], world) == rank) and p["id"] not in done]
    position = {p["id"]: i for i, p in enumerate(mine)}
    # vLLM schedules its own batches: give it many problems per call (a resume loses at most one call's work)
    per_call = 256 if cfg.engine == "vllm" else max(1, cfg.batch_size // (1 if cfg.temperature == 0 else cfg.n))
    cache: dict[str, list[dict]] = {}
    timing = {"engine": cfg.engine, "load_seconds": 0.0, "sample_seconds": 0.0, "generated_tokens": 0}
    engines = []

    def engine():
        if not engines:
            t0 = time.perf_counter()
            engines.append(load_engine(cfg.model, cfg.engine, device=cfg.device, dtype=cfg.dtype,
                                       batch_size=cfg.batch_size, tensor_parallel_size=cfg.tensor_parallel_size,
                                       gpu_memory_utilization=cfg.gpu_memory_utilization, seed=cfg.seed))
            timing["load_seconds"] = time.perf_counter() - t0
        return engines[0]

    if mine:  # loaded now, not inside run_stage, so a model that fails to load is not blamed on a problem
        engine()

    def sample(p: dict) -> list[dict]:
        if p["id"] not in cache:
            t0 = time.perf_counter()
            i = position.get(p["id"])
            part = [p] if i is None else mine[i:i + per_call]
            drawn = engine().sample([q["question"] for q in part], [q["id"] for q in part], n=cfg.n,
                                    temperature=cfg.temperature, top_p=cfg.top_p,
                                    max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + (i or 0))
            cache.update((q["id"], s) for q, s in zip(part, drawn))
            timing["sample_seconds"] += time.perf_counter() - t0
            # a greedy sample is drawn once and copied n times: count what the engine generated
            timing["generated_tokens"] += sum(sum(x["n_tokens"] for x in (s[:1] if cfg.temperature == 0 else s))
                                              for s in drawn)
        return cache.pop(p["id"])

    sample.timing = timing  # what this invocation spent (resumed problems cost nothing)
    return sample

"""Stage 2 -- attribute: Integrated Gradients of the final answer with respect to the input embeddings.

The model reads ``prompt + trace + "</think> So, the final answer is \\boxed{ANSWER}"`` (``segkit.prompt``). The
target F is the summed log-probability of the answer tokens inside ``\\boxed{}``. IG (``segkit.ig``) integrates
dF/d(embedding) along the straight path from a baseline x' to the input x, sums over the embedding dimension and
divides by the L2 norm over the sequence: one score per token. By completeness, sum_t IG_t = F(x) - F(x');
``completeness_error`` is how far the quadrature is from that.

The paper's scheme is ``--method paper --baseline pad --steps 50``: pad at every position, alphas =
linspace(0, 1, 50) with weights 1/50, one pass per alpha. The default keeps the prompt and pads the trace only, and
places Gauss-Legendre points where F changes fast until completeness_error <= 0.05 (``segkit.ig.adaptive_ig``);
why, and what it costs, is in reports/benchmark_attribution.md.

    >>> model, tok = load_model("smollm2-135m-instruct")                                    # doctest: +SKIP
    >>> rec = attribute_record(model, tok, {"question": ..., "answer": "42", "segments": [...]})  # doctest: +SKIP
    >>> rec["strength"], rec["consistency"], rec["completeness_error"], rec["target_error_met"]  # doctest: +SKIP

This module imports no torch, transformers or captum at module level, so ``segkit attribute --help`` and
argument errors answer at once; the IG core (``segkit.ig``), hardware planning (``segkit.hardware``) and token
features (``segkit.features``) are imported when a record is attributed.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real

from . import prompt
from .fields import field_error
from .prompt import Assembled, assemble  # noqa: F401 (kept importable from here; they live in segkit.prompt)
from .records import DEDUPE, ON_ERROR, check_output, stage_options
from .score import BETA, TAU, consistency, select, strength

# the IG defaults, said once: the command line, PipelineConfig and the notebooks' parameters import them
STEPS = 15              # starting gradient points (adaptive: 3 per interval)
METHOD = "adaptive"     # integration scheme
BASELINE = "pad-trace"  # the prompt keeps its tokens, the trace starts from the pad embedding
TARGET_ERROR = 0.05     # the adaptive scheme's default completeness error
MAX_STEPS = 128         # cap on gradient points when refining
TRACE_BATCH = 1         # traces whose path points share passes (1: one trace at a time)
IG_METHODS = ("adaptive", "paper", "gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left",
              "riemann_right")
BASELINES = ("pad-trace", "pad", "zero")
RECORD_FIELDS = ("question", "answer", "segments")  # what a record needs (types: segkit.fields)

# the prompt's keys and values are computed once when it is at least this share of the input. Attending to a cache
# takes SDPA's masked path instead of its causal kernel: on SmolLM2 (1 CPU thread) a step over 1,008 tokens with a
# 250-token prompt cached cost 7.1 s against 9.8 s rerunning it, over 2,030 tokens 30.4 s against 27.7 s
PREFIX_SHARE = 0.2


def check_ig_options(steps: int, method: str, baseline: str, target_error: float | None, max_steps: int,
                     batch_size: int | None = None) -> None:
    """Raise ``ValueError`` (one line, naming the option) for IG options that cannot run."""
    if method not in IG_METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose from {', '.join(IG_METHODS)}")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {', '.join(BASELINES)}")
    least = 2 if method.startswith("riemann_") else 1
    if not isinstance(steps, Integral) or steps < least:
        raise ValueError(f"steps must be an integer >= {least} for {method}, got {steps!r}")
    if not isinstance(max_steps, Integral) or max_steps < steps:
        raise ValueError(f"max_steps ({max_steps!r}) must be >= steps ({steps}): raise --max-steps")
    if target_error is not None and not (isinstance(target_error, Real) and target_error >= 0):
        raise ValueError(f"target_error must be a number >= 0 (0: off), got {target_error!r}")
    if batch_size is not None and not (isinstance(batch_size, Integral) and batch_size >= 1):
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")


def ig_path(model, a: Assembled, pad_id: int, baseline: str, batch_size: int | None = None,
            checkpointing: bool | None = None, autocast: bool = False):
    """The path to integrate along for one assembled input, ``(InterpolationPath, F(x), checkpointing)``, with the
    batch size and checkpointing from ``segkit.hardware.auto_batch_size`` unless given."""
    import torch

    from .hardware import activation_bytes, auto_batch_size
    from .ig import AnswerLogProb, InterpolationPath, baseline_embeds

    device = model.device
    ids = a.input_ids.to(device)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        # the path is built in float32 whatever the model's dtype; F casts each point to it
        x = emb(ids[:int(a.targets.max())])[None].float()                                # (1, n_tokens, H)
        pad = emb(torch.tensor([pad_id], device=device))[0].float()                      # (H,)
    x0 = baseline_embeds(x, pad, baseline, a.trace)                                       # (1, n_tokens, H)
    same = int((x0[0] != x[0]).any(-1).int().argmax())  # the path starts to differ from the input here
    if same < PREFIX_SHARE * x.shape[1]:  # a short prompt is cheaper to rerun than to attend to through a mask
        same = 0
    F = AnswerLogProb(model, ids, a.targets.to(device), prefix=x[:, :same], autocast=autocast)
    f_in, point_bytes = activation_bytes(F, x)
    auto_batch, auto_ckpt = auto_batch_size(device, F.n_tokens - F.start, point_bytes)
    checkpointing = auto_ckpt if checkpointing is None else checkpointing
    if checkpointing:  # Hugging Face's checkpointed layers drop the cache: the prompt is run at every point
        F = AnswerLogProb(model, ids, a.targets.to(device), autocast=autocast)
    return InterpolationPath(F, x, x0, batch_size or auto_batch), f_in, checkpointing


def attribute_record(model, tokenizer, rec: dict, **options) -> dict:
    """Attribute one record (needs ``question``, ``answer``, ``segments``); returns a copy with the IG fields added.
    ``options`` and errors: ``attribution_plan``."""
    from .ig import run_plan

    return run_plan(attribution_plan(model, tokenizer, rec, **options))


def attribution_plan(model, tokenizer, rec: dict, *, steps: int = STEPS, method: str = METHOD,
                     baseline: str = BASELINE, pad_id: int | None = None, batch_size: int | None = None,
                     target_error: float | None = None, max_steps: int = MAX_STEPS, autocast: bool = False,
                     checkpointing: bool | None = None, answer_template: str = prompt.ANSWER_TEMPLATE):
    """``attribute_record`` as a plan (``segkit.ig.run_plan``): it asks for F and its integrand along the record's
    path, so that several records' plans can share passes (``in_lockstep``), and returns the attributed record.

    ``target_error`` (default: TARGET_ERROR for ``adaptive``, none for fixed schemes): the adaptive scheme refines
    where the error is made; a fixed scheme doubles J; both stop at ``max_steps`` gradient points and record
    ``target_error_met``. ``batch_size`` and ``checkpointing`` default to ``segkit.hardware.auto_batch_size``.
    Raises ``ValueError`` for bad options, a field of the wrong type, or an input longer than the model's context.
    """
    from .features import segment_means, token_surprise
    from .hardware import gradient_checkpointing
    from .ig import completeness_error, ig_plan
    from .models import pad_token_id

    t_start = time.perf_counter()
    check_ig_options(steps, method, baseline, target_error, max_steps, batch_size)
    wrong = field_error(rec, RECORD_FIELDS)  # a null answer would be attributed as "None", a string split into letters
    if wrong:
        raise ValueError(wrong)
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"], answer_template)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(a.input_ids) > limit:
        raise ValueError(f"input of {len(a.input_ids)} tokens (trace {a.trace[1] - a.trace[0]}) is longer than "
                         f"the model's context of {limit}")
    if target_error is None and method == "adaptive":
        target_error = TARGET_ERROR
    path, f_in, checkpointing = ig_path(model, a, pad_id if pad_id is not None else pad_token_id(tokenizer),
                                        baseline, batch_size, checkpointing, autocast)
    f_base = float((yield path, "value", [0.0])[0])
    with gradient_checkpointing(model, checkpointing):
        raw, J = yield from ig_plan(path, f_base, f_in, method, steps, target_error or 0.0, max_steps)  # (T,)
    err = completeness_error(raw, f_in, f_base)
    norm = float(raw.norm())
    scores = raw / norm if norm > 0 else raw
    per_segment = [scores[s:e].tolist() for s, e in a.segments]
    nll, ent = token_surprise(model, a.input_ids, a.trace)
    t0 = a.trace[0]
    out = dict(rec)
    out.update(
        attributions=per_segment,
        strength=strength(per_segment),
        consistency=consistency(per_segment),
        tokens=a.pieces,
        segment_log_perplexity=segment_means(nll, a.segments, t0),
        segment_entropy=segment_means(ent, a.segments, t0),
        prompt_attribution=float(scores[:t0].abs().sum()), answer_attribution=float(scores[a.trace[1]:].abs().sum()),
        f_input=f_in, f_baseline=f_base, attribution_sum=float(raw.sum()), completeness_error=err,
        ig_steps=J, ig_method=method, ig_baseline=baseline, n_tokens=len(a.input_ids),
        attribution_seconds=time.perf_counter() - t_start,
    )
    if target_error:
        out["target_error_met"] = err <= target_error
    return out


def attribute_records(model, tokenizer, recs: list[dict], trace_batch: int = TRACE_BATCH, **options) -> list[dict]:
    """``[attribute_record(model, tokenizer, r, **options) for r in recs]``, with the path points of up to
    ``trace_batch`` records at a time in shared forward/backward passes (``in_lockstep``): the same records up to
    float rounding, meant for small models on a GPU (no faster on a 2-core CPU: reports/benchmark_attribution.md).
    Shared passes never checkpoint, and each record's ``attribution_seconds`` is its group's time shared equally."""
    if trace_batch == 1:
        return [attribute_record(model, tokenizer, r, **options) for r in recs]
    # traces of about the same length share passes, so that little of a pass is padding
    order = sorted(range(len(recs)), key=lambda i: sum(len(str(recs[i].get(k))) for k in RECORD_FIELDS))
    out = [None] * len(recs)
    for k in range(0, len(order), trace_batch):
        t, group = time.perf_counter(), order[k:k + trace_batch]
        done = in_lockstep([attribution_plan(model, tokenizer, recs[i], **{**options, "checkpointing": False})
                            for i in group])
        for i, r in zip(group, done):
            out[i] = {**r, "attribution_seconds": (time.perf_counter() - t) / len(group)}
    return out


def in_lockstep(plans: list) -> list:
    """Run plans (``segkit.ig.run_plan``) together: each round, the requests of one kind (F or its integrand) from
    every plan still running are evaluated in shared passes (``segkit.hardware.SharedPasses``); returns their
    results in order."""
    from .hardware import SharedPasses

    results, requests = {}, {}

    def send(i, answer):
        try:
            requests[i] = plans[i].send(answer)
        except StopIteration as done:
            results[i] = done.value
            requests.pop(i, None)

    for i in range(len(plans)):
        send(i, None)
    while requests:
        kind = next(iter(requests.values()))[1]
        group = [i for i, (_, k, _) in requests.items() if k == kind]
        shared = SharedPasses([requests[i][0] for i in group])
        answers = getattr(shared, kind)({j: requests[i][2] for j, i in enumerate(group)})
        for j, i in enumerate(group):
            send(i, answers[j])
    return [results[i] for i in range(len(plans))]


def selection_agreement(a: dict, b: dict, tau: float = TAU, beta: float = BETA) -> float:
    """Jaccard similarity of the segments ``segkit.score.select`` picks from two attributions of one trace (say at J
    and 2J steps): 1 when the selection does not change. Two empty selections agree."""
    sa, sb = (set(select(r["strength"], r["consistency"], tau, beta)) for r in (a, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


# options that do not change what a record holds (IG is batch-size invariant; tests/test_attribute.py)
NOT_RESULT_OPTIONS = ("input", "out", "on_error", "unique_ids", "overwrite", "threads", "batch_size", "trace_batch",
                      "device")

_INPUT, _OUT, _ON_ERROR, _UNIQUE_IDS = stage_options("JSON Lines with question, answer, segments",
                                                    "output JSON Lines (appended; resumable)")


@dataclass
class AttributeConfig:
    """Options of ``segkit attribute`` (one field per command-line option); checked when built, before any model
    loads or OUT is touched: a bad value raises ``ValueError`` with one line naming it."""
    input: str = _INPUT
    out: str = _OUT
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "hub id, local folder, .gguf file or alias smollm2-135m-instruct"})
    steps: int = field(default=STEPS, metadata={"help": "IG steps J (with adaptive: the starting points, 3 per "
                                                "interval)"})
    method: str = field(default=METHOD, metadata={"choices": IG_METHODS,
                        "help": "integration scheme: adaptive = Gauss-Legendre refined where the completeness "
                                "error is made; paper = linspace(0,1,J) with weights 1/J; gausslegendre and "
                                "riemann_* are the fixed rules captum offers"})
    baseline: str = field(default=BASELINE, metadata={"choices": BASELINES,
                          "help": "pad over the trace only, pad at every position (the paper's), or zeros"})
    pad_token: str = field(default="", metadata={"help": "token standing in for pad (default: the tokenizer's pad, "
                                                 "else its eos)"})
    batch_size: int = field(default=0, metadata={"help": "path points per forward/backward pass (0: auto, from "
                                                 "memory)"})
    target_error: float | None = field(default=None, metadata={
        "help": f"completeness error to reach (default {TARGET_ERROR} for adaptive, none for fixed schemes, which "
                f"double J until it is met; 0: off). Paper reproduction: --method paper --baseline pad --steps 50"})
    max_steps: int = field(default=MAX_STEPS, metadata={"help": "cap on gradient points when refining"})
    answer_template: str = field(default=prompt.ANSWER_TEMPLATE, metadata={"help": "answer string; ANSWER is replaced"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto"})
    autocast: bool = field(default=False, metadata={"help": "bf16 autocast of the matrix products (GPU speed-up; "
                                                    "less exact: check completeness_error)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: OMP_NUM_THREADS if set, else one "
                                              "or every core, whichever runs a test pass faster now)"})
    on_error: str = _ON_ERROR
    unique_ids: str = _UNIQUE_IDS
    overwrite: bool = field(default=False, metadata={"help": "start OUT afresh instead of resuming"})
    trace_batch: int = field(default=TRACE_BATCH, metadata={"help": "traces whose path points share forward/backward "
                             "passes (same results up to float rounding; meant for small models on a GPU: "
                             "reports/benchmark_attribution.md)"})

    def __post_init__(self):
        check_attribute_options(vars(self))
        check_device(self.device)
        if not os.path.isfile(self.input):
            raise ValueError(f"{self.input}: no such file")
        check_output(self.out, self.input)  # OUT may not be the input, a device or a folder (OutputError)


def check_attribute_options(o: Mapping) -> None:
    """Raise ``ValueError`` (one line, naming the option) for attribution options that cannot run, from their values
    alone: no file, device or model is looked at. ``o`` maps AttributeConfig's fields to values (input, out, model,
    device and overwrite are not read); ``PipelineConfig`` checks its ``attribute`` options, over the defaults, here."""
    check_ig_options(o["steps"], o["method"], o["baseline"], o["target_error"], o["max_steps"], o["batch_size"] or None)
    if not (isinstance(o["trace_batch"], Integral) and o["trace_batch"] >= 1):
        raise ValueError(f"trace_batch must be an integer >= 1 (1: one trace at a time), got {o['trace_batch']!r}")
    if o["threads"] < 0:
        raise ValueError(f"threads must be >= 0 (0: auto), got {o['threads']}")
    if o["on_error"] not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {o['on_error']!r}")
    if o["unique_ids"] not in DEDUPE:
        raise ValueError(f"unique_ids must be one of {', '.join(DEDUPE)}, got {o['unique_ids']!r}")
    if "ANSWER" not in o["answer_template"]:
        raise ValueError(f"answer template {o['answer_template']!r} has no ANSWER placeholder")


def check_device(device: str) -> None:
    """Raise ``ValueError`` when ``device`` names an accelerator this machine lacks (``models.resolve_device``
    checks it; torch is imported only for a device other than ``auto`` and ``cpu``)."""
    if device.partition(":")[0] in ("auto", "cpu"):
        return
    from .models import resolve_device

    resolve_device(device)


def attribute_options(cfg: AttributeConfig, pad_id: int) -> dict:
    """The keyword options ``attribute_record`` takes, from a config (the one place they are assembled)."""
    return dict(steps=cfg.steps, method=cfg.method, baseline=cfg.baseline, pad_id=pad_id,
                batch_size=cfg.batch_size or None, target_error=cfg.target_error, max_steps=cfg.max_steps,
                autocast=cfg.autocast, answer_template=cfg.answer_template)


def run_attribute(cfg: AttributeConfig) -> str:
    """``segkit attribute``: load the model, set the thread policy (``segkit.hardware.set_cpu_threads``), attribute
    every record of ``cfg.input`` not yet in ``cfg.out``; returns a one-line summary."""
    from .hardware import set_cpu_threads
    from .models import load_model, pad_token_id
    from .records import check_resume, run_stage

    # what determines the records: a resume with other settings would mix two kinds in one file
    options = {"stage": "attribute", **{k: v for k, v in asdict(cfg).items() if k not in NOT_RESULT_OPTIONS}}
    if not cfg.overwrite:
        check_resume(cfg.out, options)  # before the model loads
    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    set_cpu_threads(model, cfg.threads)
    opts = attribute_options(cfg, pad_token_id(tok, cfg.pad_token or None))
    fn = (lambda r: attribute_record(model, tok, r, **opts)) if cfg.trace_batch == 1 else \
        SharedAttribution(model, tok, cfg, opts)
    res = run_stage(fn, cfg.input, cfg.out, desc="attribute",
                    required=RECORD_FIELDS, on_error=cfg.on_error, overwrite=cfg.overwrite, dedupe_ids=cfg.unique_ids,
                    options=options)
    return f"{res.done} attributed, {res.resumed} already done, {len(res.skipped)} skipped -> {cfg.out}"


class SharedAttribution:
    """``run_stage``'s function for ``trace_batch`` > 1: asked for a record, it attributes it together with the
    next ``trace_batch - 1`` records ``run_stage`` will ask for (this rank's, not yet in OUT: ``attribute_records``)
    and keeps those until asked. It answers a record only with the output of that very record (same content), so a
    wrong guess of what comes next costs time, never results; a group that fails is redone one record at a time,
    so an error stays the failing record's."""

    def __init__(self, model, tokenizer, cfg: AttributeConfig, options: dict):
        import json

        from .records import finished_ids, iter_jsonl, owner, rank_world, shard_path

        self.model, self.tokenizer, self.n, self.options, self.done = model, tokenizer, cfg.trace_batch, options, {}
        self.key = lambda rec: json.dumps(rec, sort_keys=True, default=str)  # noqa: E731
        rank, world = rank_world()
        seen = set() if cfg.overwrite else {*finished_ids(cfg.out), *finished_ids(shard_path(cfg.out, rank, world))}
        self.todo = [r for _, r in iter_jsonl(cfg.input, cfg.unique_ids) if isinstance(r, dict)
                     and not field_error(r, RECORD_FIELDS) and str(r["id"]) not in seen
                     and owner(str(r["id"]), world) == rank]
        self.at = {self.key(r): k for k, r in enumerate(self.todo)}

    def __call__(self, rec: dict) -> dict:
        key = self.key(rec)
        if key not in self.done:
            k = self.at.get(key, len(self.todo))
            group = [rec] + [r for r in self.todo[k + 1:k + self.n] if self.key(r) not in self.done]
            try:
                outs = attribute_records(self.model, self.tokenizer, group, self.n, **self.options)
            except Exception:
                group, outs = [rec], [attribute_record(self.model, self.tokenizer, rec, **self.options)]
            self.done.update((self.key(r), o) for r, o in zip(group, outs))
        return self.done.pop(key)

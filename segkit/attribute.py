"""Stage 2 -- attribute: Integrated Gradients of the final answer with respect to the input embeddings.

The model reads ``prompt + trace + "</think> So, the final answer is \\boxed{ANSWER}"`` (three parts tokenized
separately, ids concatenated). The target F is the summed log-probability of the answer tokens inside
``\\boxed{}``. IG integrates dF/d(embedding) along the straight path from a baseline x' to the input x,

    IG_t = (x_t - x'_t) . integral_0^1 dF/dx_t (x' + alpha (x - x')) d alpha  ~  sum_j w_j integrand_t(alpha_j),

sums over the embedding dimension and divides by the L2 norm over the sequence: one score per token. By
completeness, sum_t IG_t = F(x) - F(x'); ``completeness_error`` is how far the quadrature is from that.

The paper's scheme is ``--method paper --baseline pad --steps 50``: pad at every position, alphas =
linspace(0, 1, 50) with weights 1/50, one pass per alpha. The default keeps the prompt and pads the trace only, and
places Gauss-Legendre points where F changes fast until completeness_error <= 0.05 (``adaptive_ig``); why, and what
it costs, is in reports/benchmark_attribution.md.

    >>> model, tok = load_model("smollm2-135m-instruct")
    >>> rec = attribute_record(model, tok, {"question": ..., "answer": "42", "segments": [...]})
    >>> rec["strength"], rec["consistency"], rec["completeness_error"], rec["target_error_met"]
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from . import prompt as P
from .models import pad_token_id
from .score import BETA, TAU, consistency, select, strength
from .segment import char_spans, token_spans

METHODS = ("adaptive", "paper", "gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left",
           "riemann_right")
BASELINES = ("pad-trace", "pad", "zero")
TARGET_ERROR = 0.05  # the adaptive scheme's default completeness error
NODES = 3            # Gauss-Legendre nodes per interval of the adaptive scheme (3 needed the fewest points)


@dataclass
class Assembled:
    """One model input: ids ``(T,)`` and where the trace, its segments and the answer target lie in it."""
    input_ids: torch.Tensor          # (T,)
    trace: tuple[int, int]           # token range of the trace
    segments: list[tuple[int, int]]  # absolute token range of every segment
    targets: torch.Tensor            # (A,) positions of the answer tokens inside \boxed{}
    pieces: list[list[str]]          # per segment, the text of each of its tokens (they concatenate to the trace)


def assemble(tokenizer, question: str, segments: Sequence[str], answer: str,
             answer_template: str = P.ANSWER_TEMPLATE) -> Assembled:
    trace = "".join(segments)
    if not trace.strip():
        raise ValueError("empty solution: nothing to attribute")
    prompt_ids, _ = P.encode(tokenizer, P.format_prompt(tokenizer, question))
    trace_ids, offsets = P.encode(tokenizer, trace)
    answer_str, (a0, a1) = P.answer_text(str(answer), answer_template)
    answer_ids, answer_offsets = P.encode(tokenizer, answer_str)
    # answer tokens = tokens whose characters overlap the answer inside \boxed{}: found from offsets, since token
    # strings cannot be searched (SmolLM2 splits "boxed" into "box" + "ed")
    base = len(prompt_ids) + len(trace_ids)
    targets = [base + i for i, (s, e) in enumerate(answer_offsets) if s < a1 and e > a0]
    if not targets or a1 == a0:
        raise ValueError(f"answer {answer!r} yields no tokens inside \\boxed{{}}")
    starts = [s for s, _ in offsets] + [len(trace)]
    pieces_flat = [trace[starts[i]:starts[i + 1]] if i else trace[:starts[1]] for i in range(len(offsets))]
    spans = token_spans(offsets, char_spans(segments))
    t0 = len(prompt_ids)
    return Assembled(
        input_ids=torch.tensor(prompt_ids + trace_ids + answer_ids),
        trace=(t0, t0 + len(trace_ids)),
        segments=[(t0 + s, t0 + e) for s, e in spans],
        targets=torch.tensor(targets),
        pieces=[pieces_flat[s:e] for s, e in spans],
    )


class AnswerLogProb(torch.nn.Module):
    """F(embeddings) = sum of log p(answer token | prefix).

    Only what can change F is computed: positions from the last answer token on are not read, logits are computed
    only where an answer token is predicted (the full ``(T, V)`` logits and their log-softmax were a fifth of the
    paper loop's time), and a ``prefix`` that is the same at every point of the path (the prompt, with the trace-only
    baseline) is run once: its keys and values are reused, and no gradient flows into it.
    """

    def __init__(self, model, input_ids: torch.Tensor, targets: torch.Tensor, prefix: torch.Tensor | None = None,
                 autocast: bool = False):
        super().__init__()
        self.model, self.autocast = model, autocast
        self.n_tokens = int(targets.max())                   # model input: positions [0, n_tokens)
        self.keep = self.n_tokens - int(targets.min()) + 1   # the last `keep` positions predict every answer token
        self.rows = (targets - 1) - (self.n_tokens - self.keep)  # (A,) rows of the kept logits that predict them
        self.answer_ids = input_ids[targets]                 # (A,)
        self.start, self.cache = 0, None
        if prefix is not None and prefix.shape[1] > 0:       # (1, P, H)
            with torch.no_grad(), self._autocast(prefix):
                self.cache = model(inputs_embeds=prefix.to(model.dtype), use_cache=True).past_key_values
            self.start = prefix.shape[1]

    def _autocast(self, embeds):
        return torch.autocast(embeds.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B,)
        embeds = embeds[:, self.start:self.n_tokens].to(self.model.dtype)
        cache = None
        if self.cache is not None:  # the model appends to the cache: each batch gets its own copy
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(len(embeds))
        with self._autocast(embeds):
            logits = self.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None,
                                logits_to_keep=self.keep).logits                                    # (B, keep, V)
        logp = torch.log_softmax(logits[:, self.rows].float(), dim=-1)                            # (B, A, V)
        return logp.gather(-1, self.answer_ids.view(1, -1, 1).expand(len(embeds), -1, 1)).sum((1, 2))


def baseline_embeds(embeds: torch.Tensor, pad_embed: torch.Tensor, kind: str, trace: tuple[int, int]):
    """The IG starting point: pad embeddings over the trace only (``pad-trace``), at every position (``pad``, the
    paper's), or zeros. Along the ``pad`` path no position holds a real token, and F jumps by several nats within
    0.005 of alpha, so no affordable number of steps converges; keeping the first or every special token (attention
    sinks) leaves the jumps, keeping the prompt removes them (reports/benchmark_attribution.md)."""
    if kind == "pad":
        return pad_embed.expand_as(embeds).clone()
    if kind == "pad-trace":
        b = embeds.clone()
        b[:, trace[0]:trace[1]] = pad_embed
        return b
    if kind == "zero":
        return torch.zeros_like(embeds)
    raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")


class Path:
    """The straight line x' + alpha (x - x') from the baseline to the input, evaluated ``batch_size`` points at a
    time (IG is a weighted sum over points, so any batching gives the same result)."""

    def __init__(self, F: AnswerLogProb, x: torch.Tensor, x0: torch.Tensor, batch_size: int):
        self.F, self.x0, self.batch_size = F, x0, batch_size
        self.delta = x - x0                                   # (1, T, H)

    def _points(self, alphas: Sequence[float]):
        a = torch.tensor(alphas, dtype=torch.float32, device=self.x0.device)
        for chunk in a.split(self.batch_size) if len(a) else ():
            yield self.x0 + chunk.view(-1, 1, 1) * self.delta  # (B, T, H)

    @torch.no_grad()
    def value(self, alphas: Sequence[float]) -> torch.Tensor:
        """F at each alpha ``(n,)``: forward passes only."""
        return torch.cat([self.F(e).cpu() for e in self._points(alphas)] or [torch.zeros(0)])

    def integrand(self, alphas: Sequence[float]) -> torch.Tensor:
        """``(n, T)``: dF/dx_t . (x_t - x'_t) at each alpha; a row sums to dF/d alpha there."""
        out = []
        for e in self._points(alphas):
            e.requires_grad_(True)
            (g,) = torch.autograd.grad(self.F(e).sum(), e)  # weights are frozen: only input gradients are computed
            out.append((g * self.delta).sum(-1).cpu())
        return torch.cat(out)


def schedule(method: str, steps: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of a fixed scheme; ``paper`` is linspace(0, 1, J) with weights 1/J (both end points
    at full weight: its error shrinks only as 1/J even for a smooth path)."""
    if method == "paper":
        return [1.0 / steps] * steps, torch.linspace(0, 1, steps).tolist()
    if method not in METHODS or method == "adaptive":
        raise ValueError(f"unknown fixed IG scheme {method!r}; choose from {METHODS[1:]}")
    sizes, alphas = approximation_parameters(method)
    return list(sizes(steps)), list(alphas(steps))


def gauss_legendre(a: float, b: float, n: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of the n-point Gauss-Legendre rule on [a, b]."""
    t, w = np.polynomial.legendre.leggauss(n)
    return ((b - a) / 2 * w).tolist(), ((b - a) / 2 * t + (a + b) / 2).tolist()


@dataclass(eq=False)
class Interval:
    a: float
    b: float
    fa: float
    fb: float
    ig: torch.Tensor | None = None  # (T,) this interval's share of the attributions

    @property
    def gap(self) -> float:
        """The interval's own completeness gap: its quadrature of dF/d alpha minus F(b) - F(a)."""
        return float(self.ig.sum()) - (self.fb - self.fa)


def adaptive_ig(path: Path, f0: float, f1: float, steps: int, target_error: float, max_steps: int):
    """Composite Gauss-Legendre that places its points where F changes fast.

    [0, 1] starts as ``steps // NODES`` equal intervals of ``NODES`` points each. An interval's own completeness gap
    (its quadrature of dF/d alpha minus F(b) - F(a)) is its exact share of the completeness error, so while that
    error is above ``target_error`` the intervals with the largest gaps are halved (one forward pass for F at the
    midpoint, ``NODES`` new gradient points per half); the others keep their points. Returns ``(T,)`` raw
    attributions and the number of gradient points used.
    """
    n = min(NODES, steps)
    edges = np.linspace(0, 1, max(1, steps // n) + 1).tolist()
    f = [f0, *path.value(edges[1:-1]).tolist(), f1]
    todo = [Interval(a, b, fa, fb) for a, b, fa, fb in zip(edges, edges[1:], f, f[1:])]
    done: list[Interval] = []
    used, allowed = 0, target_error * abs(f1 - f0)
    while True:
        rules = [gauss_legendre(iv.a, iv.b, n) for iv in todo]
        values = path.integrand([a for _, alphas in rules for a in alphas]).split(n)  # one (n, T) per interval
        for iv, (w, _), v in zip(todo, rules, values):
            iv.ig = torch.tensor(w) @ v
        done += todo
        used += n * len(todo)
        total = sum(iv.gap for iv in done)
        if not target_error or abs(total) <= allowed:
            break
        # halve the fewest intervals, largest gaps first, that leave the others' summed gap within half the allowed
        # error (a halved interval's new gap is typically far smaller): halving all offenders overshot the target
        worst, rest = [], total
        for iv in sorted(done, key=lambda iv: -abs(iv.gap)):
            if abs(rest) <= allowed / 2:
                break
            worst.append(iv)
            rest -= iv.gap
        worst = worst[:(max_steps - used) // (2 * n)]
        if not worst:  # the cap is reached
            break
        mids = path.value([(iv.a + iv.b) / 2 for iv in worst]).tolist()
        done = [iv for iv in done if iv not in worst]
        todo = [half for iv, fm in zip(worst, mids) for half in
                (Interval(iv.a, (iv.a + iv.b) / 2, iv.fa, fm), Interval((iv.a + iv.b) / 2, iv.b, fm, iv.fb))]
    return sum(iv.ig for iv in done), used


def completeness_error(raw: torch.Tensor, f_in: float, f_base: float) -> float:
    return abs(float(raw.sum()) - (f_in - f_base)) / max(abs(f_in - f_base), 1e-12)


@torch.no_grad()
def token_surprise(model, input_ids: torch.Tensor, trace: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per trace token: negative log-probability and predictive entropy (nats), from one forward pass."""
    ids = input_ids[:trace[1]][None].to(model.device)  # logits only where a trace token is predicted
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=trace[1] - trace[0] + 1).logits[0, :-1]  # (n, V)
    logp = torch.log_softmax(logits.float(), -1)
    nll = -logp.gather(-1, input_ids[trace[0]:trace[1], None].to(logp.device))[:, 0]
    entropy = -(logp.exp() * logp).sum(-1)
    return nll.cpu(), entropy.cpu()


def activation_bytes(F: AnswerLogProb, x: torch.Tensor) -> tuple[float, int]:
    """``(F(x), bytes)``: one forward pass at the input that also measures what one path point keeps for the
    backward pass (the tensors autograd saves, weights excluded), so batches are sized from the model at hand."""
    weights = {p.untyped_storage().data_ptr() for p in F.model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t

    e = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        f = F(e)
    return float(f[0].detach()), sum(saved.values())


def memory_budget(device: torch.device) -> int:
    """Bytes the path points of one batch may keep: half the free GPU memory (the backward pass needs about as much
    again), or a quarter of the available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4


# the prompt's keys and values are computed once when it is at least this share of the input. Attending to a cache
# takes SDPA's masked path instead of its causal kernel: on SmolLM2 (1 CPU thread) a step over 1,008 tokens with a
# 250-token prompt cached cost 7.1 s against 9.8 s rerunning it, over 2,030 tokens 30.4 s against 27.7 s
PREFIX_SHARE = 0.2
CPU_BATCH_TOKENS = 2048  # on CPU, batches beyond ~2k tokens are no faster per point (benchmark: batch size table)


def auto_batch_size(device: torch.device, n_tokens: int, point_bytes: int) -> tuple[int, bool]:
    """``(path points per pass, gradient checkpointing)``. GPUs take as many points as memory allows; when fewer
    than two fit, layers are recomputed in the backward pass instead of stored (about a third more compute). On CPU,
    matrix products are already efficient at a few thousand tokens, so the batch stops there."""
    fits = memory_budget(device) // max(point_bytes, 1)
    if device.type != "cuda":
        return max(1, min(fits, CPU_BATCH_TOKENS // n_tokens)), False
    if fits >= 2:
        return fits, False
    # checkpointing keeps each layer's input, not its internals: a twelfth of the activations on the testbed model
    return max(1, fits * 8), True


@contextlib.contextmanager
def gradient_checkpointing(model, enabled: bool):
    """Hugging Face's per-layer activation checkpointing, on for the duration. It only acts on layers in training
    mode, so the layers themselves (not their dropouts, which stay off) are flagged as training meanwhile; the hook
    it adds to make input embeddings require gradients is removed (our path points already do)."""
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    model.activation_checkpointing_enable()
    model.disable_input_require_grads()
    for m in layers:
        m.training = True
    try:
        yield
    finally:
        for m in layers:
            m.training = False
        model.activation_checkpointing_disable()


@torch.no_grad()
def cpu_threads(model, n_tokens: int = 256) -> int:
    """Torch threads for a CPU run, measured: a forward pass of ``n_tokens`` with one thread and with every core,
    twice each, and the faster wins. Under load the answer flips: a thread that shares its core with another busy
    process stalls every parallel operation (on 2 shared cores, one thread ran 3x faster than two; idle, two ran 1.7x
    faster than one), and the load average lags too much to tell (reports/benchmark_attribution.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ids = torch.arange(n_tokens, device=model.device)[None] % getattr(model.config, "vocab_size", 1000)
    best = {}
    for n in (1, cores) * 2 if cores > 1 else ():
        torch.set_num_threads(n)
        t = time.perf_counter()
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        best[n] = min(best.get(n, math.inf), time.perf_counter() - t)
    threads = min(best, key=best.get) if best else 1
    torch.set_num_threads(threads)
    return threads


def ig_path(model, a: Assembled, pad_id: int, baseline: str, batch_size: int | None = None,
            checkpointing: bool | None = None, autocast: bool = False) -> tuple[Path, float, bool]:
    """The path to integrate along for one input, ``(path, F(x), checkpointing)``, with the batch size and
    checkpointing from ``auto_batch_size`` unless given."""
    device = model.device
    ids = a.input_ids.to(device)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        # the path is built in float32 whatever the model's dtype; F casts each point to it
        x = emb(ids[:int(a.targets.max())])[None].float()                                # (1, n_tokens, H)
        pad = emb(torch.tensor([pad_id], device=device))[0].float()
    x0 = baseline_embeds(x, pad, baseline, a.trace)
    same = int((x0[0] != x[0]).any(-1).int().argmax())  # the path starts to differ from the input here
    if same < PREFIX_SHARE * x.shape[1]:  # a short prompt is cheaper to rerun than to attend to through a mask
        same = 0
    F = AnswerLogProb(model, ids, a.targets.to(device), prefix=x[:, :same], autocast=autocast)
    f_in, point_bytes = activation_bytes(F, x)
    auto_batch, auto_ckpt = auto_batch_size(device, F.n_tokens - F.start, point_bytes)
    checkpointing = auto_ckpt if checkpointing is None else checkpointing
    if checkpointing:  # Hugging Face's checkpointed layers drop the cache: the prompt is run at every point
        F = AnswerLogProb(model, ids, a.targets.to(device), autocast=autocast)
    return Path(F, x, x0, batch_size or auto_batch), f_in, checkpointing


def attribute_record(model, tokenizer, rec: dict, *, steps: int = 15, method: str = "adaptive",
                     baseline: str = "pad-trace", pad_id: int | None = None, batch_size: int | None = None,
                     target_error: float | None = None, max_steps: int = 128, autocast: bool = False,
                     checkpointing: bool | None = None, answer_template: str = P.ANSWER_TEMPLATE) -> dict:
    """Attribute one record (needs ``question``, ``answer``, ``segments``); returns it with the IG fields added.

    ``target_error`` (default: TARGET_ERROR for ``adaptive``, none for fixed schemes): the adaptive scheme refines
    where the error is made; a fixed scheme doubles J; both stop at ``max_steps`` gradient points and record
    ``target_error_met``. ``batch_size`` and ``checkpointing`` default to ``auto_batch_size``.
    """
    t_start = time.perf_counter()
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"], answer_template)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(a.input_ids) > limit:
        raise ValueError(f"input of {len(a.input_ids)} tokens (trace {a.trace[1] - a.trace[0]}) is longer than "
                         f"the model's context of {limit}")
    if target_error is None and method == "adaptive":
        target_error = TARGET_ERROR
    path, f_in, checkpointing = ig_path(model, a, pad_id if pad_id is not None else pad_token_id(tokenizer),
                                        baseline, batch_size, checkpointing, autocast)
    f_base = float(path.value([0.0])[0])
    with gradient_checkpointing(model, checkpointing):
        if method == "adaptive":
            raw, J = adaptive_ig(path, f_base, f_in, steps, target_error or 0.0, max_steps)
        else:
            J = steps
            while True:
                w, alphas = schedule(method, J)
                raw = torch.tensor(w) @ path.integrand(alphas)
                if not target_error or completeness_error(raw, f_in, f_base) <= target_error or 2 * J > max_steps:
                    break
                J *= 2
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
        segment_log_perplexity=[float(nll[s - t0:e - t0].mean()) if e > s else 0.0 for s, e in a.segments],
        segment_entropy=[float(ent[s - t0:e - t0].mean()) if e > s else 0.0 for s, e in a.segments],
        prompt_attribution=float(scores[:t0].abs().sum()), answer_attribution=float(scores[a.trace[1]:].abs().sum()),
        f_input=f_in, f_baseline=f_base, attribution_sum=float(raw.sum()), completeness_error=err,
        ig_steps=J, ig_method=method, ig_baseline=baseline, n_tokens=len(a.input_ids),
        attribution_seconds=time.perf_counter() - t_start,
    )
    if target_error:
        out["target_error_met"] = err <= target_error
    return out


def selection_agreement(a: dict, b: dict, tau: float = TAU, beta: float = BETA) -> float:
    """Jaccard similarity of the segments ``segkit.score.select`` picks from two attributions of one trace (say at J
    and 2J steps): 1 when the selection does not change. Two empty selections agree."""
    sa, sb = (set(select(r["strength"], r["consistency"], tau, beta)) for r in (a, b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class AttributeConfig:
    input: str = field(metadata={"positional": True, "help": "JSON Lines with question, answer, segments"})
    out: str = field(default="", metadata={"required": True, "help": "output JSON Lines (appended; resumable)"})
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "hub id, local folder, .gguf file or alias smollm2-135m-instruct"})
    steps: int = field(default=15, metadata={"help": "IG steps J (with adaptive: the starting points, 3 per "
                                             "interval)"})
    method: str = field(default="adaptive", metadata={"choices": METHODS,
                        "help": "integration scheme: adaptive = Gauss-Legendre refined where the completeness "
                                "error is made; paper = linspace(0,1,J) with weights 1/J; others are captum's"})
    baseline: str = field(default="pad-trace", metadata={"choices": BASELINES,
                          "help": "pad over the trace only, pad at every position (the paper's), or zeros"})
    pad_token: str = field(default="", metadata={"help": "token standing in for pad (default: the tokenizer's pad, "
                                                 "else its eos)"})
    batch_size: int = field(default=0, metadata={"help": "path points per forward/backward pass (0: auto, from "
                                                 "memory)"})
    target_error: float | None = field(default=None, metadata={
        "help": f"completeness error to reach (default {TARGET_ERROR} for adaptive, none for fixed schemes, which "
                f"double J until it is met; 0: off). Paper reproduction: --method paper --baseline pad --steps 50"})
    max_steps: int = field(default=128, metadata={"help": "cap on gradient points when refining"})
    answer_template: str = field(default=P.ANSWER_TEMPLATE, metadata={"help": "answer string; ANSWER is replaced"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto"})
    autocast: bool = field(default=False, metadata={"help": "bf16 autocast of the matrix products (GPU speed-up; "
                                                    "less exact: check completeness_error)"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: OMP_NUM_THREADS if set, else one "
                                              "or every core, whichever runs a test pass faster now)"})
    on_error: str = field(default="stop", metadata={"choices": ("stop", "skip"),
                          "help": "on a bad record: stop naming file:line, or report it and go on"})
    overwrite: bool = field(default=False, metadata={"help": "start OUT afresh instead of resuming"})


def run_attribute(cfg: AttributeConfig) -> str:
    from .models import load_model
    from .records import run_stage

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    if model.device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif model.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        # a thread count set by the user or by torchrun (1 per process) is kept: timing-based choices differ
        # between runs, and the thread count changes the order of float sums in the last digits
        cpu_threads(model)
    pad = pad_token_id(tok, cfg.pad_token or None)
    opts = dict(steps=cfg.steps, method=cfg.method, baseline=cfg.baseline, pad_id=pad,
                batch_size=cfg.batch_size or None, target_error=cfg.target_error, max_steps=cfg.max_steps,
                autocast=cfg.autocast, answer_template=cfg.answer_template)
    res = run_stage(lambda r: attribute_record(model, tok, r, **opts), cfg.input, cfg.out, desc="attribute",
                    required=("question", "answer", "segments"), on_error=cfg.on_error, overwrite=cfg.overwrite)
    return f"{res.done} attributed, {res.resumed} already done, {len(res.skipped)} skipped -> {cfg.out}"

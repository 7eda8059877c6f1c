"""Stage 2 -- attribute: Integrated Gradients of the final answer with respect to the input embeddings.

The model reads ``prompt + trace + "</think> So, the final answer is \\boxed{ANSWER}"`` (three parts tokenized
separately, ids concatenated). The target F is the summed log-probability of the answer tokens inside
``\\boxed{}``; IG integrates dF/d(embedding) from a baseline (pad-token embeddings) to the input with captum,
sums over the embedding dimension and divides by the L2 norm over the sequence: one score per token.

    >>> model, tok = load_model("smollm2-135m-instruct")
    >>> rec = attribute_record(model, tok, {"question": ..., "answer": "42", "segments": [...]})
    >>> rec["strength"], rec["consistency"], rec["completeness_error"]
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters

from . import prompt as P
from .models import pad_token_id
from .score import consistency, strength
from .segment import char_spans, token_spans

METHODS = ("paper", "gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
BASELINES = ("pad", "pad-trace", "zero")


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


def schedule(method: str, steps: int) -> tuple[list[float], list[float]]:
    """``(step_sizes, alphas)`` of the integration scheme; ``paper`` is linspace(0, 1, J) with weights 1/J."""
    if method == "paper":
        return [1.0 / steps] * steps, torch.linspace(0, 1, steps).tolist()
    if method not in METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose from {METHODS}")
    sizes, alphas = approximation_parameters(method)
    return list(sizes(steps)), list(alphas(steps))


class AnswerLogProb(torch.nn.Module):
    """F(embeddings) = sum of log p(answer token | prefix), computing logits only where the answer is predicted."""

    def __init__(self, model, input_ids: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.model = model
        T = input_ids.shape[0]
        self.keep = T - int(targets.min()) + 1              # last `keep` positions hold every predicting position
        self.rows = (targets - 1) - (T - self.keep)         # (A,) rows of the kept logits that predict the answer
        self.answer_ids = input_ids[targets]                # (A,)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B,)
        logits = self.model(inputs_embeds=embeds, use_cache=False, logits_to_keep=self.keep).logits  # (B, keep, V)
        logp = torch.log_softmax(logits[:, self.rows].float(), dim=-1)                              # (B, A, V)
        return logp.gather(-1, self.answer_ids.view(1, -1, 1).expand(len(embeds), -1, 1)).sum((1, 2))


def baseline_embeds(embeds: torch.Tensor, pad_embed: torch.Tensor, kind: str, trace: tuple[int, int]):
    """The IG starting point: pad embeddings everywhere (``pad``), over the trace only (``pad-trace``), or zeros."""
    if kind == "pad":
        return pad_embed.expand_as(embeds).clone()
    if kind == "pad-trace":
        b = embeds.clone()
        b[:, trace[0]:trace[1]] = pad_embed
        return b
    if kind == "zero":
        return torch.zeros_like(embeds)
    raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")


def integrated_gradients(F: AnswerLogProb, x: torch.Tensor, x0: torch.Tensor, method: str, steps: int,
                         batch_size: int) -> torch.Tensor:
    """Raw per-token IG ``(T,)``: captum's IG over the scheme's points, ``batch_size`` points per pass."""
    ig = IntegratedGradients(F, multiply_by_inputs=True)
    sizes, alphas = schedule(method, steps)
    total = torch.zeros_like(x, dtype=torch.float32)
    # IG is a weighted sum over path points, so chunks of points add up exactly
    for i in range(0, steps, batch_size):
        chunk = (sizes[i:i + batch_size], alphas[i:i + batch_size])
        (part,) = ig._attribute(inputs=(x,), baselines=(x0,), n_steps=len(chunk[0]), method=method,
                                step_sizes_and_alphas=chunk)
        total += part.float()
    return total[0].sum(-1)  # (T,)


@torch.no_grad()
def token_surprise(model, input_ids: torch.Tensor, trace: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per trace token: negative log-probability and predictive entropy (nats), from one forward pass."""
    logits = model(input_ids=input_ids[None].to(model.device), use_cache=False).logits[0].float()  # (T, V)
    logp = torch.log_softmax(logits[trace[0] - 1:trace[1] - 1], -1)                               # (n, V)
    nll = -logp.gather(-1, input_ids[trace[0]:trace[1], None].to(logp.device))[:, 0]
    entropy = -(logp.exp() * logp).sum(-1)
    return nll.cpu(), entropy.cpu()


def auto_batch_size(model, n_tokens: int, steps: int) -> int:
    """Path points per pass: bounded by a rough activation budget (1 GiB on CPU, a quarter of free GPU memory)."""
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 512)
    layers = getattr(cfg, "num_hidden_layers", 12)
    per_point = 4 * n_tokens * hidden * layers * 16  # bytes kept for backward, ~16 floats per hidden unit and layer
    if model.device.type == "cuda":
        budget = torch.cuda.mem_get_info(model.device)[0] // 4
    else:
        budget = 1 << 30
    return max(1, min(steps, budget // max(per_point, 1)))


def attribute_record(model, tokenizer, rec: dict, *, steps: int = 50, method: str = "paper",
                     baseline: str = "pad", pad_id: int | None = None, batch_size: int | None = None,
                     target_error: float | None = None, max_steps: int = 512,
                     answer_template: str = P.ANSWER_TEMPLATE) -> dict:
    """Attribute one record (needs ``question``, ``answer``, ``segments``); returns it with the IG fields added."""
    t_start = time.perf_counter()
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"], answer_template)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(a.input_ids) > limit:
        raise ValueError(f"input of {len(a.input_ids)} tokens (trace {a.trace[1] - a.trace[0]}) is longer than "
                         f"the model's context of {limit}")
    device = model.device
    ids = a.input_ids.to(device)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x = emb(ids)[None]                                              # (1, T, H)
        pad = emb(torch.tensor([pad_id if pad_id is not None else pad_token_id(tokenizer)], device=device))[0]
    x0 = baseline_embeds(x, pad, baseline, a.trace)
    F = AnswerLogProb(model, ids, a.targets.to(device))
    with torch.no_grad():
        f_in, f_base = F(torch.cat([x, x0])).tolist()
    J = steps
    while True:
        raw = integrated_gradients(F, x, x0, method, J, batch_size or auto_batch_size(model, len(ids), J)).cpu()
        err = abs(float(raw.sum()) - (f_in - f_base)) / max(abs(f_in - f_base), 1e-12)
        if target_error is None or err <= target_error or J * 2 > max_steps:
            break
        J *= 2
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
        ig_steps=J, ig_method=method, ig_baseline=baseline, n_tokens=len(ids),
        attribution_seconds=time.perf_counter() - t_start,
    )
    if target_error is not None:
        out["target_error_met"] = err <= target_error
    return out


@dataclass
class AttributeConfig:
    input: str = field(metadata={"positional": True, "help": "JSON Lines with question, answer, segments"})
    out: str = field(default="", metadata={"required": True, "help": "output JSON Lines (appended; resumable)"})
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "hub id, local folder, .gguf file or alias smollm2-135m-instruct"})
    steps: int = field(default=50, metadata={"help": "IG steps J (starting J with --target-error)"})
    method: str = field(default="paper", metadata={"choices": METHODS,
                        "help": "integration scheme: paper = linspace(0,1,J) with weights 1/J; others are captum's"})
    baseline: str = field(default="pad", metadata={"choices": BASELINES,
                          "help": "pad at every position (the paper's), pad over the trace only, or zeros"})
    pad_token: str = field(default="", metadata={"help": "token standing in for pad (default: the tokenizer's pad, "
                                                 "else its eos)"})
    batch_size: int = field(default=0, metadata={"help": "path points per forward/backward pass (0: auto)"})
    target_error: float = field(default=0.0, metadata={"help": "double J until completeness_error <= this "
                                                       "(0: off)"})
    max_steps: int = field(default=512, metadata={"help": "cap on J for --target-error"})
    answer_template: str = field(default=P.ANSWER_TEMPLATE, metadata={"help": "answer string; ANSWER is replaced"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps"})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto"})
    on_error: str = field(default="stop", metadata={"choices": ("stop", "skip"),
                          "help": "on a bad record: stop naming file:line, or report it and go on"})
    overwrite: bool = field(default=False, metadata={"help": "start OUT afresh instead of resuming"})


def run_attribute(cfg: AttributeConfig) -> str:
    from .models import load_model
    from .records import run_stage

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    pad = pad_token_id(tok, cfg.pad_token or None)
    opts = dict(steps=cfg.steps, method=cfg.method, baseline=cfg.baseline, pad_id=pad,
                batch_size=cfg.batch_size or None, target_error=cfg.target_error or None, max_steps=cfg.max_steps,
                answer_template=cfg.answer_template)
    res = run_stage(lambda r: attribute_record(model, tok, r, **opts), cfg.input, cfg.out, desc="attribute",
                    required=("question", "answer", "segments"), on_error=cfg.on_error, overwrite=cfg.overwrite)
    return f"{res.done} attributed, {res.resumed} already done, {len(res.skipped)} skipped -> {cfg.out}"

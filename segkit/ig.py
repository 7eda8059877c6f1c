"""Integrated Gradients along a straight path, for any differentiable F of the input embeddings.

IG attributes F(x) - F(x') to the positions t of the input x (shape ``(1, T, H)``) against a baseline x'::

    IG_t = (x_t - x'_t) . integral_0^1 dF/dx_t (x' + alpha (x - x')) d alpha  ~  sum_j w_j integrand_t(alpha_j)

and by completeness sum_t IG_t = F(x) - F(x'); ``completeness_error`` is how far a quadrature is from that. The
pieces, as in captum's ``integrated_gradients.py``: what is attributed is a forward function passed in (here
``AnswerLogProb``, the summed log-probability of the answer tokens), ``InterpolationPath`` evaluates F and its
integrand at any alphas, and the points and weights come from ``schedule`` (fixed schemes) or ``adaptive_plan``
(Gauss-Legendre refined where the completeness error is made). Each integration is a plan, a generator that asks
for F or its integrand at the alphas it needs next, so one plan runs along one path (``integrated_gradients``) or,
in lockstep with other traces' plans, in shared passes (``segkit.attribute.in_lockstep``).

    >>> w, alphas = schedule("riemann_trapezoid", 3)
    >>> w, alphas
    ([0.16666666666666666, 0.3333333333333333, 0.16666666666666666], [0.0, 0.5, 1.0])
    >>> path = InterpolationPath(lambda e: e.sum((1, 2)) ** 2, torch.ones(1, 2, 1), torch.zeros(1, 2, 1), 4)
    >>> raw, used = integrated_gradients(path, 0.0, 4.0, "gausslegendre", steps=2)
    >>> raw.tolist(), used   # F = (x_1 + x_2)^2 from 0 to 4, shared equally
    ([2.0, 2.0], 2)

No hardware planning here (batch size, checkpointing, threads: ``segkit.hardware``) and no record fields
(``segkit.attribute``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Generator, Sequence

import numpy as np
import torch

NODES = 3  # Gauss-Legendre nodes per interval of the adaptive scheme (3 needed the fewest points)


class AnswerLogProb(torch.nn.Module):
    """F(embeddings) = sum of log p(answer token | prefix): ``(B, T, H)`` embeddings -> ``(B,)``.

    ``input_ids`` ``(T,)`` and ``targets`` ``(A,)`` (positions of the answer tokens) say what is scored. Only what
    can change F is computed: positions from the last answer token on are not read, logits are computed only where
    an answer token is predicted (the full ``(T, V)`` logits and their log-softmax were a fifth of the paper loop's
    time), and a ``prefix`` ``(1, P, H)`` that is the same at every point of the path (the prompt, with the
    trace-only baseline) is run once: its keys and values are reused, and no gradient flows into it.
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
            with torch.no_grad(), self.amp(prefix):
                self.cache = model(inputs_embeds=prefix.to(model.dtype), use_cache=True).past_key_values
            self.start = prefix.shape[1]

    def amp(self, embeds):
        """bf16 autocast of the matrix products when asked (``autocast``), else nothing."""
        return torch.autocast(embeds.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B,)
        embeds = embeds[:, self.start:self.n_tokens].to(self.model.dtype)                     # (B, n - P, H)
        cache = None
        if self.cache is not None:  # the model appends to the cache: each batch gets its own copy
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(len(embeds))
        with self.amp(embeds):
            logits = self.model(inputs_embeds=embeds, past_key_values=cache, use_cache=cache is not None,
                                logits_to_keep=self.keep).logits                                    # (B, keep, V)
        logp = torch.log_softmax(logits[:, self.rows].float(), dim=-1)                            # (B, A, V)
        return logp.gather(-1, self.answer_ids.view(1, -1, 1).expand(len(embeds), -1, 1)).sum((1, 2))


def baseline_embeds(embeds: torch.Tensor, pad_embed: torch.Tensor, kind: str, trace: tuple[int, int]):
    """The IG starting point x' ``(1, T, H)`` for input ``embeds`` ``(1, T, H)``: the pad embedding ``(H,)`` over
    the token range ``trace`` only (``pad-trace``), at every position (``pad``, the paper's), or zeros (``zero``).

    Along the ``pad`` path no position holds a real token, and F jumps by several nats within 0.005 of alpha, so no
    affordable number of steps converges; keeping the first or every special token (attention sinks) leaves the
    jumps, keeping the prompt removes them (reports/benchmark_attribution.md)."""
    if kind == "pad":
        return pad_embed.expand_as(embeds).clone()
    if kind == "pad-trace":
        b = embeds.clone()
        b[:, trace[0]:trace[1]] = pad_embed
        return b
    if kind == "zero":
        return torch.zeros_like(embeds)
    raise ValueError(f"unknown baseline {kind!r}")


class InterpolationPath:
    """The straight line x' + alpha (x - x') from the baseline ``x0`` to the input ``x`` (both ``(1, T, H)``),
    through any forward function ``F`` ``(B, T, H) -> (B,)``, evaluated ``batch_size`` points at a time (IG is a
    weighted sum over points, so any batching gives the same result)."""

    def __init__(self, F: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x0: torch.Tensor,
                 batch_size: int):
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
            out.append((g * self.delta).sum(-1).cpu())       # (B, T)
        return torch.cat(out)


def schedule(method: str, steps: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of a fixed scheme with ``steps`` points on [0, 1], as captum computes them.

    ``paper`` is linspace(0, 1, J) with weights 1/J (both end points at full weight: its error shrinks only as 1/J
    even for a smooth path); ``gausslegendre`` is numpy's Gauss-Legendre rule mapped to [0, 1]; the ``riemann_*``
    rules (2 points or more) weigh 1/J each, halved at both ends for the trapezoid."""
    if steps < 1:
        raise ValueError(f"IG steps must be at least 1, got {steps}")
    if method == "paper":
        return [1.0 / steps] * steps, torch.linspace(0, 1, steps).tolist()
    if method == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(steps)
        return (0.5 * w).tolist(), (0.5 * (1 + t)).tolist()
    rule = method.removeprefix("riemann_")
    if not method.startswith("riemann_") or rule not in ("left", "right", "middle", "trapezoid"):
        raise ValueError(f"unknown fixed IG scheme {method!r}")
    if steps < 2:
        raise ValueError(f"{method} needs at least 2 steps, got {steps}")
    n = steps
    weights = [1 / n] * n
    if rule == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    # float32 linspace, as captum: the alphas of a run before captum was dropped are reproduced to the bit
    start, end = {"trapezoid": (0, 1), "left": (0, 1 - 1 / n), "middle": (1 / (2 * n), 1 - 1 / (2 * n)),
                  "right": (1 / n, 1)}[rule]
    return weights, torch.linspace(start, end, n).tolist()


def gauss_legendre(a: float, b: float, n: int) -> tuple[list[float], list[float]]:
    """``(weights, alphas)`` of the n-point Gauss-Legendre rule on [a, b]."""
    t, w = np.polynomial.legendre.leggauss(n)
    return ((b - a) / 2 * w).tolist(), ((b - a) / 2 * t + (a + b) / 2).tolist()


def completeness_error(raw: torch.Tensor, f_in: float, f_base: float) -> float:
    """``|sum(raw) - (F(x) - F(x'))| / |F(x) - F(x')|``, for raw attributions ``(T,)``."""
    return abs(float(raw.sum()) - (f_in - f_base)) / max(abs(f_in - f_base), 1e-12)


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


def adaptive_plan(path, f0: float, f1: float, steps: int, target_error: float, max_steps: int):
    """Composite Gauss-Legendre that places its points where F changes fast; F(x') = ``f0``, F(x) = ``f1``.

    [0, 1] starts as ``steps // NODES`` equal intervals of ``NODES`` points each. An interval's own completeness gap
    (its quadrature of dF/d alpha minus F(b) - F(a)) is its exact share of the completeness error, so while that
    error is above ``target_error`` the intervals with the largest gaps are halved (one forward pass for F at the
    midpoint, ``NODES`` new gradient points per half); the others keep their points. A plan along ``path`` (see
    ``run_plan``): returns ``(T,)`` raw attributions and the number of gradient points used (at most ``max_steps``
    once refining starts).
    """
    n = min(NODES, steps)
    edges = np.linspace(0, 1, max(1, steps // n) + 1).tolist()
    f = [f0, *(yield path, "value", edges[1:-1]).tolist(), f1]
    todo = [Interval(a, b, fa, fb) for a, b, fa, fb in zip(edges, edges[1:], f, f[1:])]
    done: list[Interval] = []
    used, allowed = 0, target_error * abs(f1 - f0)
    while True:
        rules = [gauss_legendre(iv.a, iv.b, n) for iv in todo]
        values = (yield path, "integrand", [a for _, alphas in rules for a in alphas]).split(n)  # (n, T) per interval
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
        mids = (yield path, "value", [(iv.a + iv.b) / 2 for iv in worst]).tolist()
        done = [iv for iv in done if iv not in worst]
        todo = [half for iv, fm in zip(worst, mids) for half in
                (Interval(iv.a, (iv.a + iv.b) / 2, iv.fa, fm), Interval((iv.a + iv.b) / 2, iv.b, fm, iv.fb))]
    return sum(iv.ig for iv in done), used


def ig_plan(path, f0: float, f1: float, method: str, steps: int, target_error: float = 0.0,
            max_steps: int | None = None):
    """The plan of ``integrated_gradients`` (same arguments): ``adaptive_plan``, or a fixed scheme
    of ``steps`` points doubled until the completeness error is ``target_error`` or doubling would pass
    ``max_steps``."""
    if target_error and max_steps is None:
        raise ValueError("refining to a target error needs a cap on gradient points: pass max_steps")
    if method == "adaptive":
        return (yield from adaptive_plan(path, f0, f1, steps, target_error, max_steps))
    J = steps
    while True:
        w, alphas = schedule(method, J)
        raw = torch.tensor(w) @ (yield path, "integrand", alphas)  # (J,) @ (J, T) -> (T,)
        if not target_error or completeness_error(raw, f1, f0) <= target_error or 2 * J > max_steps:
            return raw, J
        J *= 2


def run_plan(plan: Generator):
    """Run a plan: a computation written as a generator that yields what it needs next, ``(path, "value",
    alphas)`` or ``(path, "integrand", alphas)``, is sent ``path.value(alphas)`` ``(n,)`` or
    ``path.integrand(alphas)`` ``(n, T)``, and returns its result (for the plans here: ``(raw attributions (T,),
    gradient points used)``). The quadrature is said once; who evaluates the points (each path on its own here,
    several traces' in shared passes in ``segkit.attribute.in_lockstep``) is the caller's choice."""
    answer = None
    try:
        while True:
            path, kind, alphas = plan.send(answer)
            answer = getattr(path, kind)(alphas)
    except StopIteration as done:
        return done.value


def adaptive_ig(path: InterpolationPath, f0: float, f1: float, steps: int, target_error: float, max_steps: int):
    """``adaptive_plan`` along ``path``: ``(raw attributions (T,), gradient points used)``."""
    return run_plan(adaptive_plan(path, f0, f1, steps, target_error, max_steps))


def integrated_gradients(path: InterpolationPath, f0: float, f1: float, method: str, steps: int,
                         target_error: float = 0.0, max_steps: int | None = None) -> tuple[torch.Tensor, int]:
    """``(raw attributions (T,), gradient points used)`` along ``path`` with F(x') = ``f0`` and F(x) = ``f1``.

    ``adaptive`` refines intervals where the error is made (``adaptive_plan``); a fixed scheme starts at ``steps``
    points and, when ``target_error`` is set (0: off), doubles them until the completeness error is met or
    doubling would pass ``max_steps``, which a target error needs (the stage's default: ``attribute.MAX_STEPS``)."""
    return run_plan(ig_plan(path, f0, f1, method, steps, target_error, max_steps))

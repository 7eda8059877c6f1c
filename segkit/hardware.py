"""Hardware planning for attribution: path points per pass, several traces in shared passes, gradient
checkpointing, CPU threads.

None of this changes what IG computes (the tests check that batch size, checkpointing and shared passes leave the
attributions unchanged); it decides how fast and in how much memory. The numbers behind each choice are in
reports/benchmark_attribution.md.

    >>> auto_batch_size(torch.device("cpu"), n_tokens=512, point_bytes=10_000)   # 2048 tokens per pass on CPU
    (4, False)
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import torch

CPU_BATCH_TOKENS = 2048  # on CPU, batches beyond ~2k tokens are no faster per point (benchmark: batch size table)


def activation_bytes(F, x: torch.Tensor) -> tuple[float, int]:
    """``(F(x), bytes)`` for a forward function ``F`` (with a ``.model``) at ``x`` ``(1, T, H)``: one forward
    pass that also measures what one path point keeps for the backward pass (the tensors autograd saves, weights
    excluded), so batches are sized from the model at hand."""
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


def auto_batch_size(device: torch.device, n_tokens: int, point_bytes: int) -> tuple[int, bool]:
    """``(path points per pass, gradient checkpointing)`` for inputs of ``n_tokens`` whose path points keep
    ``point_bytes`` each. GPUs take as many points as ``memory_budget`` allows; when fewer than two fit, layers are
    recomputed in the backward pass instead of stored (about a third more compute). On CPU, matrix products are
    already efficient at a few thousand tokens, so the batch stops at ``CPU_BATCH_TOKENS``."""
    fits = memory_budget(device) // max(point_bytes, 1)
    if device.type != "cuda":
        return max(1, min(fits, CPU_BATCH_TOKENS // n_tokens)), False
    if fits >= 2:
        return fits, False
    # checkpointing keeps each layer's input, not its internals: a twelfth of the activations on the testbed model
    return max(1, fits * 8), True


class SharedPasses:
    """Path points of several traces in shared forward/backward passes, meant for small models on a GPU, whose
    passes over one trace's few points are mostly overhead (on a 2-core CPU, where a pass is compute, it measured
    no faster: reports/benchmark_attribution.md). ``paths`` are ``segkit.ig.InterpolationPath``s through
    ``segkit.ig.AnswerLogProb``s of one model; each row gets its own trace's F and integrand, equal to the
    single-trace ones up to float rounding: in a pass, the part of each input after its cached prompt is
    right-padded to the longest (a causal model never reads later positions), each prompt's keys and values are
    left-padded to the longest and masked out, and positions are each trace's own. Rows are sorted by length and a
    pass takes at most ``tokens`` rows x padded length (default: the smallest budget the paths' own batch sizes
    imply), so little of it is padding. Requests are ``{trace index: alphas}``, answers ``{trace index: tensor}``.
    """

    def __init__(self, paths: list, tokens: int | None = None):
        self.paths, self.F = paths, [p.F for p in paths]
        self.L = [F.n_tokens - F.start for F in self.F]                                   # the part run, per trace
        self.tokens = tokens or min(p.batch_size * n for p, n in zip(paths, self.L))
        # the positions (in the part run) that predict each trace's answer tokens
        self.rows = [F.n_tokens - F.keep + F.rows - F.start for F in self.F]
        cached = next((F.cache.layers for F in self.F if F.cache is not None), [])
        # each trace's prompt keys and values per layer (1, heads, P_i, d); none cached: P_i = 0
        self.kv = [[(l.keys, l.values) for l in F.cache.layers] if F.cache is not None else
                   [(l.keys[:, :, :0], l.values[:, :, :0]) for l in cached] for F in self.F]

    def _F(self, rows: list[tuple[int, float]], grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F (B,), embeds (B, L, H))`` at the points ``rows`` (trace index, alpha)."""
        from transformers import DynamicCache

        x0, traces = self.paths[0].x0, {i for i, _ in rows}
        P, L = max(self.F[i].start for i in traces), max(self.L[i] for i in traces)      # longest prompt, part
        keep = torch.unique(torch.cat([self.rows[i] for i in traces]))                    # (K,) sorted
        embeds = x0.new_zeros(len(rows), L, x0.shape[-1])
        mask = torch.zeros(len(rows), P + L, dtype=torch.long, device=x0.device)
        positions = torch.arange(L, device=x0.device).repeat(len(rows), 1)               # (B, L)
        for b, (i, alpha) in enumerate(rows):
            p, s, n = self.paths[i], self.F[i].start, self.F[i].n_tokens
            embeds[b, :n - s] = (p.x0 + alpha * p.delta)[0, s:n]
            mask[b, P - s:P + n - s] = 1
            positions[b] += s
        embeds.requires_grad_(grad)
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, P - t.shape[2], 0))  # noqa: E731 (on the left, in time)
        cache = DynamicCache(ddp_cache_data=[
            tuple(torch.cat([pad(self.kv[i][layer][kv]) for i, _ in rows]) for kv in (0, 1))
            for layer in range(len(self.kv[0]))]) if P else None
        model = self.F[0].model
        with self.F[0].amp(embeds):
            logits = model(inputs_embeds=embeds.to(model.dtype), attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=cache is not None, logits_to_keep=keep).logits
        f = []                                                                            # logits: (B, K, V)
        for b, (i, _) in enumerate(rows):
            logp = torch.log_softmax(logits[b, torch.searchsorted(keep, self.rows[i])].float(), -1)  # (A, V)
            f.append(logp.gather(-1, self.F[i].answer_ids.view(-1, 1)).sum())
        return torch.stack(f), embeds

    def _passes(self, requests: dict[int, list[float]]) -> list[list[tuple[int, float]]]:
        """The requested points, shortest traces first, in passes of at most ``tokens`` padded tokens."""
        passes: list[list[tuple[int, float]]] = []
        for i in sorted(requests, key=lambda i: self.L[i]):
            for a in requests[i]:
                if not passes or (len(passes[-1]) + 1) * self.L[i] > self.tokens:
                    passes.append([])
                passes[-1].append((i, a))
        return passes

    @staticmethod
    def _by_trace(requests: dict[int, list[float]], rows: list[tuple[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
        """``(trace index, row)`` pairs (each trace's rows in the order of its alphas) stacked per trace."""
        out = {i: [] for i in requests}
        for i, row in rows:
            out[i].append(row)
        return {i: torch.stack(r) if r else torch.zeros(0) for i, r in out.items()}

    @torch.no_grad()
    def value(self, requests: dict[int, list[float]]) -> dict[int, torch.Tensor]:
        """F at each trace's alphas, ``(n,)`` per trace."""
        return self._by_trace(requests, [(i, f) for rows in self._passes(requests)
                                         for (i, _), f in zip(rows, self._F(rows, False)[0].cpu())])

    def integrand(self, requests: dict[int, list[float]]) -> dict[int, torch.Tensor]:
        """``(n, T)`` per trace, as ``InterpolationPath.integrand`` (zero on the cached prompt)."""
        out = []
        for rows in self._passes(requests):
            f, e = self._F(rows, True)
            (g,) = torch.autograd.grad(f.sum(), e)                                         # (B, L, H)
            for b, (i, _) in enumerate(rows):
                p, s, n = self.paths[i], self.F[i].start, self.F[i].n_tokens
                out.append((i, torch.cat([torch.zeros(s), (g[b, :n - s] * p.delta[0, s:n]).sum(-1).cpu()])))  # (T,)
        return self._by_trace(requests, out)


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


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@torch.no_grad()
def fastest_cpu_threads(model, n_tokens: int = 256) -> int:
    """The torch thread count (1 or every core) under which ``model`` runs a forward pass of ``n_tokens`` faster
    now, measured twice each; torch's own setting is restored afterwards.

    Under load the answer flips: a thread that shares its core with another busy process stalls every parallel
    operation (on 2 shared cores, one thread ran 3x faster than two; idle, two ran 1.7x faster than one), and the
    load average lags too much to tell (reports/benchmark_attribution.md)."""
    cores = cpu_cores()
    if cores == 1:
        return 1
    ids = torch.arange(n_tokens, device=model.device)[None] % getattr(model.config, "vocab_size", 1000)  # (1, n)
    before, best = torch.get_num_threads(), {}
    try:
        for n in (1, cores) * 2:
            torch.set_num_threads(n)
            t = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            best[n] = min(best.get(n, math.inf), time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return min(best, key=best.get)


def set_cpu_threads(model, threads: int = 0) -> int | None:
    """The one thread policy of attribution: sets torch's global thread count for a model on the CPU and returns
    it (``None`` for a model on an accelerator, where nothing is set).

    ``threads`` > 0 is used as given. Otherwise a count the user or a launcher chose through ``OMP_NUM_THREADS``
    (torchrun sets 1 per process) is kept, since timing-based choices differ between runs and the thread count
    changes the order of float sums in the last digits; without one, ``fastest_cpu_threads`` decides."""
    if model.device.type != "cpu":
        return None
    if threads <= 0 and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = threads if threads > 0 else fastest_cpu_threads(model)
    torch.set_num_threads(threads)
    return threads

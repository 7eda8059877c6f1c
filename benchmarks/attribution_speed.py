"""Attribution benchmark: the paper's IG loop against `segkit attribute`, on the same models, traces and machine.

A command, not a test (`make bench`). It measures, in one process:
  1. the paper's settings (pad baseline, linspace(0, 1, 50), weights 1/50): a faithful re-implementation of the
     paper's loop (one interpolation point per pass, full logits) against segkit with the same settings: equal
     attributions, time per trace and per step, and where each spends its time (profile);
  2. segkit's default settings against the paper's: time, completeness error, and agreement of the selected
     segments with a high-step reference (and between J and 2J);
  3. how the cost grows with trace length (256 to 4096 tokens, a few steps each), with J and with the batch size,
     and what thread settings do on this machine; peak memory.
Writes the tables into reports/benchmark_attribution.md and prints them.

    python benchmarks/attribution_speed.py               # about 20 minutes on 2 CPU cores
    python benchmarks/attribution_speed.py --traces 20 --smol-traces 8 --lengths 256 1024 4096 16384
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path as FsPath

import torch

from segkit import attribute as A
from segkit import hardware, ig
from segkit.prompt import assemble
from segkit.models import load_model, pad_token_id
from segkit.records import load
from segkit.score import consistency, strength
from segkit.segment import segment
from segkit.synth import SynthConfig, make_records

ROOT = FsPath(__file__).resolve().parents[1]
SMOL = "smollm2-135m-instruct"
MARKER = "<!-- tables below: written by benchmarks/attribution_speed.py -->"
BLOCK = "<!-- block: "
SECTIONS = ("paper", "default", "shared", "length", "batch", "profile")


# ------------------------------------------------------------------------------------------------------------------
# the paper's loop, written from its description


def paper_loop(model, tokenizer, rec: dict, steps: int = 50, weights: bool = False) -> torch.Tensor:
    """The paper's IG: one interpolation point per forward/backward pass, full (T, V) logits, alphas =
    linspace(0, 1, J), mean gradient times (x - x'), pad embedding at every position. Raw scores ``(T,)``.

    ``weights=False`` asks autograd for the input gradient only (the strong baseline); ``weights=True`` is the loop
    as often written, ``f.backward()`` on a model whose weights require gradients, which also computes (and
    accumulates) every weight's gradient."""
    a = assemble(tokenizer, rec["question"], rec["segments"], rec["answer"])
    emb = model.get_input_embeddings()
    x = emb(a.input_ids)[None].detach()
    x0 = emb(torch.tensor([pad_token_id(tokenizer)]))[0].detach().expand_as(x)
    grads = torch.zeros_like(x)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen if weights else ():
        p.requires_grad_(True)
    try:
        for alpha in torch.linspace(0, 1, steps):
            e = (x0 + alpha * (x - x0)).requires_grad_(True)
            logp = torch.log_softmax(model(inputs_embeds=e).logits[0].float(), -1)
            f = logp[a.targets - 1, a.input_ids[a.targets]].sum()
            if weights:
                model.zero_grad()
                f.backward()
                grads += e.grad
            else:
                grads += torch.autograd.grad(f, e)[0]
    finally:
        for p in frozen:
            p.requires_grad_(False)
            p.grad = None
    return (grads / steps * (x - x0))[0].sum(-1)


# ------------------------------------------------------------------------------------------------------------------
# traces, models, measuring


def testbed_records(n: int, seed: int = 0, **synth) -> list[dict]:
    """Testbed traces (`segkit synth`, test split), segmented."""
    recs = make_records(SynthConfig(out="", n=n, seed=seed, split="test", **synth))
    return [{**r, "segments": segment(r["solution"])} for r in recs]


def record_of_length(tokenizer, n_tokens: int, seed: int = 0) -> dict:
    """A testbed record whose model input is about ``n_tokens`` tokens: a very long synth trace cut at segment
    boundaries, keeping its final segment (which states the answer)."""
    (rec,) = testbed_records(1, seed=seed, chain_length=16, redundant=60)
    segs, q = rec["segments"], rec["question"]
    base = len(assemble(tokenizer, q, [segs[-1]], rec["answer"]).input_ids)
    kept, total = [], base
    for s in segs[:-1]:
        cost = len(tokenizer(s, add_special_tokens=False)["input_ids"])
        if total + cost > n_tokens:
            break
        kept.append(s)
        total += cost
    return {**rec, "segments": kept + [segs[-1]], "solution": "".join(kept + [segs[-1]])}


def testbed_model(path: FsPath | None) -> str:
    """The testbed attributor: ``path``, else the one `make report` trained (the newest under runs/default/), else a
    tiny Qwen2 trained here once on full synth traces (`segkit train`, ~2 minutes: a weaker model)."""
    if path is None:
        trained = sorted(ROOT.glob("runs/default/testbed-*/attributor-*/train_summary.json"),
                         key=lambda p: p.stat().st_mtime)
        if trained:
            return str(trained[-1].parent)
        path = ROOT / "runs" / "bench" / "testbed-model"
    if not (path / "train_summary.json").exists():
        data = path.parent / "train.jsonl"
        subprocess.run([sys.executable, "-m", "segkit", "synth", "--out", str(data), "--n", "1500"], check=True)
        subprocess.run([sys.executable, "-m", "segkit", "train", str(data), "--out", str(path), "--epochs", "3"],
                       check=True)
    return str(path)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms (CPU: torch has no allocator counter)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def timed(fn, *args, threads: int | None = None, **kw):
    if threads:
        torch.set_num_threads(threads)
    t = time.perf_counter()
    with PeakRSS() as mem:
        out = fn(*args, **kw)
    return out, time.perf_counter() - t, mem.mib


def segkit_path(model, tok, rec: dict, baseline: str = "pad") -> ig.InterpolationPath:
    """The path `attribute_record` integrates along, with its automatic batch size."""
    a = assemble(tok, rec["question"], rec["segments"], rec["answer"])
    return A.ig_path(model, a, pad_token_id(tok), baseline)[0]


def steps_time(fn, k: int, repeats: int = 2, threads: int | None = None) -> float:
    """Seconds per step of ``fn(k)`` (k steps), the best of ``repeats`` runs."""
    return min(timed(fn, k, threads=threads)[1] for _ in range(repeats)) / k


def flat(rec: dict) -> torch.Tensor:
    return torch.tensor([v for seg in rec["attributions"] for v in seg])


def table(header: list[str], rows: list[list]) -> list[str]:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]


# ------------------------------------------------------------------------------------------------------------------
# the sections


def paper_settings(model, tok, rec, default_threads: int, auto_threads: int, out: list[str]) -> None:
    """Same settings, same output: the paper's loop against segkit, J = 50, pad at every position."""
    print("  paper settings", flush=True)
    opts = dict(method="paper", baseline="pad", steps=50, pad_id=pad_token_id(tok))
    a = assemble(tok, rec["question"], rec["segments"], rec["answer"])
    raw, t_paper, m_paper = timed(paper_loop, model, tok, rec, 50, threads=default_threads)
    raw_w, t_paper_w, m_paper_w = timed(paper_loop, model, tok, rec, 50, weights=True, threads=default_threads)
    ref = (raw / raw.norm())[a.trace[0]:a.trace[1]]
    rows = [[f"the paper's loop, input gradients only ({default_threads} threads)", t_paper, "1.00x", "-",
             round(m_paper)],
            [f"the paper's loop with f.backward(), weight gradients too ({default_threads} threads)", t_paper_w,
             f"{t_paper / t_paper_w:.2f}x",
             f"{float(((raw_w / raw_w.norm())[a.trace[0]:a.trace[1]] - ref).norm() / ref.norm()):.1e}",
             round(m_paper_w)]]
    for th in dict.fromkeys([default_threads, auto_threads]):
        ours, t_ours, m_ours = timed(A.attribute_record, model, tok, rec, threads=th, **opts)
        diff = float((flat(ours) - ref).norm() / ref.norm())
        rows.append([f"segkit, same settings ({th} threads{', its own choice' if th == auto_threads else ''})",
                     t_ours, f"{t_paper / t_ours:.2f}x", f"{diff:.1e}", round(m_ours)])
    out += [f"{len(a.input_ids)} tokens, J = 50, pad baseline at every position, linspace alphas:", ""]
    out += table(["run", "s/trace", "speed-up over the input-gradient loop", "rel. diff of attributions",
                  "peak RSS MiB"], rows)
    # the speed-up taken apart: per step at equal threads (best of 2 runs of 3 steps each)
    path = segkit_path(model, tok, rec)
    rows = []
    for th in sorted({1, default_threads}):
        p = steps_time(lambda k: paper_loop(model, tok, rec, k), 3, threads=th)
        s = steps_time(lambda k: path.integrand(torch.linspace(0, 1, k).tolist()), 3, threads=th)
        rows.append([th, p, s, f"{p / s:.2f}x"])
    out += ["", "Per step at equal threads (segkit: batched points, answer-position logits, input cut after the "
            f"answer; auto batch {path.batch_size}):", ""]
    out += table(["threads", "paper s/step", "segkit s/step", "speed-up"], rows)


def paper_record(model, tok, rec: dict, steps: int, threads: int) -> dict:
    """The paper's loop on one record, timed, with the fields `attribute_record` would give its scores."""
    raw, seconds, _ = timed(paper_loop, model, tok, rec, steps, threads=threads)
    a = assemble(tok, rec["question"], rec["segments"], rec["answer"])
    F = ig.AnswerLogProb(model, a.input_ids, a.targets)
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x = emb(a.input_ids)[None]
        f_in, f_base = F(torch.cat([x, emb.weight[pad_token_id(tok)].expand_as(x)])).tolist()
    scores = raw / raw.norm()
    per_segment = [scores[s:e].tolist() for s, e in a.segments]
    return {"attribution_seconds": seconds, "ig_steps": steps, "strength": strength(per_segment),
            "consistency": consistency(per_segment), "completeness_error": ig.completeness_error(raw, f_in, f_base)}


def default_settings(model, tok, recs, ref_opts: dict, out: list[str], stability: bool, paper_threads: int,
                     threads: int) -> None:
    """segkit's defaults against the paper's loop on the same traces: time, completeness, selections."""
    print(f"  default settings on {len(recs)} traces", flush=True)
    pad = pad_token_id(tok)
    res = {f"the paper's loop (J=50, pad, {paper_threads} threads)":
           [paper_record(model, tok, r, 50, paper_threads) for r in recs]}
    torch.set_num_threads(threads)
    ref_name = f"reference (adaptive to error {ref_opts['target_error']:g}, at most {ref_opts['max_steps']} points"
    runs = {f"segkit default ({threads} threads)": {}, f"{ref_name}, pad-trace)": ref_opts}
    if stability:
        runs[f"{ref_name}, pad)"] = {**ref_opts, "baseline": "pad"}
    res.update({name: [A.attribute_record(model, tok, r, pad_id=pad, **opts) for r in recs]
                for name, opts in runs.items()})
    if stability:
        res["the paper's loop, J=100"] = [paper_record(model, tok, r, 100, paper_threads) for r in recs]
    rows = []
    for name, o in res.items():
        errs = [x["completeness_error"] for x in o]
        pad_baseline = "paper" in name or name.endswith("pad)")
        ref = next((v for n, v in res.items() if n.startswith("reference") and n.endswith("pad)") == pad_baseline),
                   None)
        agree = [A.selection_agreement(x, y) for x, y in zip(o, ref)] if ref and "reference" not in name else None
        rows.append([name, len(o), statistics.mean(x["attribution_seconds"] for x in o),
                     statistics.mean(x["ig_steps"] for x in o), statistics.median(errs), max(errs),
                     f"{sum(e < 0.05 for e in errs) / len(errs):.0%}",
                     f"{sum(x['target_error_met'] for x in o) / len(o):.0%}" if "target_error_met" in o[0] else "-",
                     statistics.mean(agree) if agree else "-",
                     f"{sum(a == 1 for a in agree) / len(agree):.0%}" if agree else "-"])
    if stability:
        j = [A.selection_agreement(x, y) for x, y in zip(*(v for n, v in res.items() if "paper's loop" in n))]
        rows.append(["the paper's loop: J=50 against J=100", len(j)] + [""] * 6 +
                    [statistics.mean(j), f"{sum(a == 1 for a in j) / len(j):.0%}"])
    out += table(["settings", "traces", "s/trace", "J", "median error", "max error", "error < 0.05", "target met",
                  "selection Jaccard vs reference (same baseline)", "identical selection"], rows)


def shared_passes(model, tok, recs, sizes, out: list[str]) -> None:
    """The default settings, uncapped, one trace at a time against several traces' points in shared passes
    (``attribute_records(trace_batch=N)``). Each group of ``max(sizes)`` traces is attributed once per size, the
    order of the sizes turning from group to group (A B, B A, ...), so that other processes on the machine weigh on
    every size alike; the ratio is the median of the per-group ratios of CPU seconds (this process's own), and
    wall seconds are shown beside them."""
    print(f"  shared passes on {len(recs)} traces, trace_batch {sizes}", flush=True)
    pad, n = pad_token_id(tok), max(sizes)
    cpu, wall, outs = ({b: [] for b in sizes} for _ in range(3))
    for k, g in enumerate(range(0, len(recs), n)):
        group = recs[g:g + n]
        for b in sizes[k % len(sizes):] + sizes[:k % len(sizes)]:
            c, t = time.process_time(), time.perf_counter()
            outs[b] += A.attribute_records(model, tok, group, trace_batch=b, pad_id=pad)
            cpu[b].append((time.process_time() - c) / len(group))
            wall[b].append((time.perf_counter() - t) / len(group))
    one, errs = outs[1], [r["completeness_error"] for r in outs[1]]
    rows = []
    for b in sizes:
        diff = max(float((flat(x) - flat(y)).norm() / flat(y).norm()) for x, y in zip(outs[b], one))
        same_steps = sum(x["ig_steps"] == y["ig_steps"] for x, y in zip(outs[b], one)) / len(one)
        rows.append([b, statistics.median(cpu[b]), statistics.median(wall[b]),
                     f"{statistics.median(c1 / cb for c1, cb in zip(cpu[1], cpu[b])):.2f}x", f"{diff:.1e}",
                     f"{same_steps:.0%}"])
    out += table(["trace_batch", "CPU s/trace (median over groups)", "wall s/trace", "speed-up (median of "
                  "per-group CPU ratios)", "max rel. diff of attributions vs 1", "same ig_steps"], rows)
    per_trace = statistics.mean(cpu[1])
    out += ["", f"Default settings uncapped (adaptive, target 0.05, at most {A.MAX_STEPS} points), one trace at a "
            f"time: {statistics.mean(r['ig_steps'] for r in one):.1f} points per trace on average (max "
            f"{max(r['ig_steps'] for r in one)}), completeness error <= 0.05 on {sum(e <= 0.05 for e in errs)} of "
            f"{len(errs)} traces ({sum(e <= 0.05 for e in errs) / len(errs):.0%}), median error "
            f"{statistics.median(errs):.3g}; {per_trace:.2f} CPU s per trace, so 512 traces (the "
            f"default run's 256 and their variant) take {512 * per_trace / 60:.1f} min on one core, "
            f"{256 * per_trace / 60:.1f} min on two.", ""]


def scaling(model, tok, lengths, steps: int, paper: bool, out: list[str]) -> None:
    """Cost per step and memory against length: the paper's pass (full logits) and segkit's (batched points)."""
    rows = []
    for n in lengths:
        if n > getattr(model.config, "max_position_embeddings", 1 << 30):
            continue
        rec = record_of_length(tok, n)
        row = [len(assemble(tok, rec["question"], rec["segments"], rec["answer"]).input_ids)]
        if paper:
            _, t, m = timed(paper_loop, model, tok, rec, 1)
            row += [t, round(m)]
        path = segkit_path(model, tok, rec, baseline="pad-trace")
        _, t, m = timed(path.integrand, torch.linspace(0.1, 1, steps).tolist())
        row += [t / steps, round(m), path.batch_size]
        rows.append(row)
        print(f"  length {row[0]}: {row[1:]}", flush=True)
    out += table(["tokens"] + (["paper s/step", "paper peak MiB"] if paper else []) +
                 ["segkit s/step (pad-trace: the prompt run once when >= 20% of the input)", "segkit peak MiB",
                  "batch"], rows)


def batch_sizes(model, tok, n_tokens: int, sizes, out: list[str]) -> None:
    """Seconds per path point against points per pass (best of 2), with the measured activation memory."""
    rec = record_of_length(tok, n_tokens)
    path = segkit_path(model, tok, rec)
    _, point_bytes = hardware.activation_bytes(path.F, path.x0)
    rows = []
    for b in sizes:
        path.batch_size = b
        t = steps_time(lambda k: path.integrand(torch.linspace(0.1, 1, k).tolist()), b)
        rows.append([path.F.n_tokens, b, t, f"{b * point_bytes / 2 ** 20:.0f}"])
    auto = hardware.auto_batch_size(path.x0.device, path.F.n_tokens - path.F.start, point_bytes)[0]
    out += table(["tokens", "batch", "s/point", "activation MiB"], rows)
    out += ["", f"{path.F.n_tokens} tokens: {point_bytes / path.F.n_tokens / 1024:.1f} KiB of activations per token "
            f"and point (measured); auto batch on this machine: {auto}.", ""]


def profile(model, tok, n_tokens: int, out: list[str]) -> None:
    """Where one step's time goes: the paper's pass and segkit's, by kind of operation."""
    from torch.profiler import profile as torch_profile

    rec = record_of_length(tok, n_tokens)
    kinds = {"matmul": ("mm", "addmm", "bmm", "matmul", "linear"), "attention": ("attention", "flash"),
             "log-softmax": ("softmax",), "copy/fill": ("copy_", "fill_", "zero_", "index", "gather", "scatter")}
    path = segkit_path(model, tok, rec)
    rows = []
    for name, fn in (("paper", lambda: paper_loop(model, tok, rec, 1)), ("segkit", lambda: path.integrand([0.5]))):
        fn()
        with torch_profile() as prof:
            fn()
        total, by = 0.0, {k: 0.0 for k in [*kinds, "other"]}
        for ev in prof.key_averages():
            if not ev.key.startswith("aten::"):
                continue
            total += ev.self_cpu_time_total
            kind = next((k for k, keys in kinds.items() if any(s in ev.key for s in keys)), "other")
            by[kind] += ev.self_cpu_time_total
        rows.append([name, total / 1e6] + [f"{v / total:.0%}" for v in by.values()])
    out += table(["one step", "s"] + list(kinds) + ["other"], rows)


# ------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=8, help="testbed traces for the convergence table (testbed model)")
    p.add_argument("--smol-traces", type=int, default=1, help="testbed traces for the SmolLM2 convergence table")
    p.add_argument("--smol-stability", action="store_true", help="also J=100 and a pad reference on SmolLM2 (slow)")
    p.add_argument("--ref-steps", type=int, default=256, help="cap on the points of the reference attributions "
                   "(adaptive, refined to a tenth of the default's completeness error)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for every run (0: the paper's loop with "
                   "torch's default, segkit with its measured choice)")
    p.add_argument("--traces-file", default="", help="JSON Lines of traces for the testbed tables (default: the "
                   "testbed's test split; `make report`'s are runs/default/traces-*/segmented.jsonl)")
    p.add_argument("--trace-batches", type=int, nargs="*", default=[1, 4, 16],
                   help="trace_batch values compared in the shared-passes table (1 first)")
    p.add_argument("--lengths", type=int, nargs="*", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--scaling-steps", type=int, default=1, help="IG steps per length in the scaling table")
    p.add_argument("--testbed-model", default="", help="testbed attributor folder (default: the one `make report` "
                   "trained, else one trained here)")
    p.add_argument("--models", nargs="*", default=["testbed", "smollm2"], choices=["testbed", "smollm2"])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS, help="what to measure")
    p.add_argument("--out", default=str(ROOT / "reports" / "benchmark_attribution.md"))
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    default_threads = args.threads or torch.get_num_threads()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    head = ["## Benchmark tables", "",
           f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}, no GPU; "
           f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores). "
           + (f"Every run uses {args.threads} thread(s). " if args.threads else
              f"The paper's loop runs with torch's default threads ({default_threads}), segkit with its measured "
              "choice (`segkit.hardware.fastest_cpu_threads`). ") +
           f"Command: `python benchmarks/attribution_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
           ""]
    blocks = {}
    models = [("SmolLM2", SMOL)] if "smollm2" in args.models else []
    if "testbed" in args.models:
        models.insert(0, ("testbed", testbed_model(FsPath(args.testbed_model) if args.testbed_model else None)))
    for label, name in models:
        model, tok = load_model(name, device="cpu", dtype="float32")
        smol = label == "SmolLM2"
        auto_threads = args.threads or hardware.fastest_cpu_threads(model)
        torch.set_num_threads(auto_threads)
        print(f"== {label}: segkit runs with {auto_threads} threads", flush=True)
        recs = testbed_records(max(args.traces, args.smol_traces))
        if args.traces_file and not smol:
            recs = [{**r, "segments": r.get("segments") or segment(r["solution"])} for r in load(args.traces_file)]
        if smol:  # the shortest traces keep the default run within its time
            recs = sorted(recs, key=lambda r: len(r["solution"]))[:args.smol_traces]
        else:
            recs = recs[:args.traces]
        run = f"Run {time.strftime('%Y-%m-%d %H:%M')}: " + head[2]

        def section(key: str, title: str) -> list[str]:
            blocks[f"{label}: {key}"] = lines = [f"#### {label}: {title}", "", run, ""]
            return lines

        if "paper" in args.sections:
            paper_settings(model, tok, record_of_length(tok, 256), default_threads, auto_threads,
                           section("paper", "paper settings, the paper's loop against segkit, same output"))
        if "default" in args.sections:
            # the reference: adaptive quadrature refined to a tenth of the default's completeness error
            ref = dict(method="adaptive", baseline="pad-trace", steps=A.STEPS, target_error=A.TARGET_ERROR / 10,
                       max_steps=args.ref_steps)
            default_settings(model, tok, recs, ref, section("default", f"default settings against the paper's "
                                                             f"({len(recs)} testbed traces)"),
                             not smol or args.smol_stability, default_threads, auto_threads)
        torch.set_num_threads(auto_threads)
        if "shared" in args.sections and not smol:
            shared_passes(model, tok, recs, args.trace_batches, section(
                "shared", f"several traces in shared passes ({len(recs)} testbed traces)"))
        if "length" in args.sections:
            scaling(model, tok, args.lengths, args.scaling_steps, paper=True,
                    out=section("length", f"cost against length ({args.scaling_steps} steps per length)"))
        if "batch" in args.sections:
            out = section("batch", "cost against the batch size (path points per pass)")
            for n, sizes in ((256, [1, 2, 4, 8]), (1024, [1, 2, 4])) if smol else ((256, [1, 4, 16, 64]),
                                                                                    (1024, [1, 4, 16])):
                batch_sizes(model, tok, n, sizes, out)
        if "profile" in args.sections:
            profile(model, tok, 256, section("profile", "where one step's time goes (profile, 256 tokens)"))
    # the findings written by hand above the marker are kept; a model's block below it is replaced when that model
    # was run, and kept otherwise
    path = FsPath(args.out)
    text = path.read_text() if path.exists() else ""
    findings, _, tables = text.partition(MARKER)
    old = {}
    for chunk in tables.split(BLOCK)[1:]:
        key, _, body = chunk.partition(" -->")
        old[key.strip()] = body.strip("\n")
    for key, lines in blocks.items():
        old[key] = "\n".join(lines).rstrip("\n")
    order = sorted(old, key=lambda k: (k.split(":")[0] != "testbed", SECTIONS.index(k.split(": ")[1])
                                       if k.split(": ")[1] in SECTIONS else 99))
    body = "".join(f"{BLOCK}{key} -->\n{old[key]}\n\n" for key in order)
    path.write_text(findings + MARKER + "\n\n## Benchmark tables\n\n" + body)
    print("\n\n".join("\n".join(lines) for lines in blocks.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure fine-tuning settings of the testbed in which segment selection can matter (issue 11).

A design is a base model and a fine-tuning set. The base model learns the task from traces of one style (e.g.
``concise``: only the useful path); every mode then fine-tunes it on long, redundant traces of the same problems'
distribution, as the paper fine-tunes a base model on a stronger model's long traces. A design is worth using when
oracle-selective SFT (loss on the planted useful segments only, full trace as context) beats full-trace SFT beyond
the 95% interval of the paired difference, and full SFT changes the base model measurably.

Everything is built with segkit's own functions (``synth.make_records``, ``finetune.fit`` with ``init``,
``evaluate.run_evaluate``) and cached under ``--workdir``; the measurements are appended as JSON Lines to
``--log`` (one line per design and mode), from which ``reports/testbed_design.md`` is written.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/testbed_design.py --design concise-2k
    .venv/bin/python benchmarks/testbed_design.py --table     # the markdown table of every logged design

Learning curves (issue 18): ``--curve NAME --steps 250,500,1000`` trains one base model per step budget on concise
traces of a synth setting (``CURVES``), each a whole run (warmup, then cosine decay to 0: the model a base budget of
that many steps gives), and evaluates it greedy and sampled (temperature 0.6, top-p 1) on held-out problems beside
the constant guess (the most frequent gold answer) and the uniform guess (1 / number of distinct answers);
``--probe STEPS`` then fine-tunes the base of that budget on long traces with ``full`` and ``oracle``. Points go to
``curves.jsonl`` beside ``--log``, the probe to ``--log``; ``--curve-table`` prints the curves.

    taskset -c 0 .venv/bin/python benchmarks/testbed_design.py --curve functional --steps 250,500,1000,2000
"""
from __future__ import annotations

import argparse
import json
import platform
from collections import Counter
import time
from datetime import date
from pathlib import Path

import numpy as np

from segkit import stats
from segkit.evaluate import EvalConfig, run_evaluate
from segkit.finetune import fit
from segkit.records import dump, load
from segkit.synth import USEFUL, SynthConfig, make_records
from segkit.testbed_model import tokenizer_corpus
from segkit.train import TrainConfig, build_model, build_tokenizer

# every design: synth options of the base model's traces and of the fine-tuning traces, sizes and budgets
BASE = dict(base_synth={"style": "concise"}, n_base=1000, base_epochs=4.0, base_lr=3e-3,
            ft_synth={"style": "long"}, n_ft=256, ft_epochs=3.0, ft_lr=1e-3, n_eval=100, max_new_tokens=160,
            modes=("full", "oracle", "random"), base_seeds=(0,), ft_seeds=(0,))
DESIGNS = {  # as measured in reports/testbed_design.md, in that order
    "concise-1k": {},                                                     # 500 base steps: too weak a base
    "concise-2k": dict(n_base=2000, base_epochs=8.0),                     # 2,000 base steps: the chosen design
    "concise-2k-lr3e-3": dict(n_base=2000, base_epochs=8.0, ft_lr=3e-3, base_from="concise-2k"),
    "concise-2k-2bases": dict(n_base=2000, base_epochs=8.0, base_seeds=(0, 1), base_from="concise-2k"),
    "concise-2k-2bases-2seeds": dict(n_base=2000, base_epochs=8.0, base_seeds=(0, 1), ft_seeds=(0, 1),
                                     base_from="concise-2k"),
    # not measured yet: the final segment does not restate the answer (needs its own base model)
    "concise-2k-norestate": dict(n_base=2000, base_epochs=8.0, base_synth={"style": "concise", "restate_answer": False},
                                 ft_synth={"style": "long", "restate_answer": False}),
}


# learning curves: synth options over the functional testbed's, model size and base traces per curve
CURVE_BASE = dict(synth={"roles": "functional"}, size="tiny", n_base=4000, batch_size=8, base_lr=3e-3, n_ft=256,
                  n_eval=200, max_new_tokens=160)
CURVES = {  # reports/testbed_design.md section 9 measures "functional"; the others are the next knobs to try
    "functional": {},                                            # the default knobs: chain 2, 1 distractor, mod 10
    "functional-pm": dict(synth={"ops": "+-"}),                  # no product: fewer arithmetic facts to learn
    "functional-chain1": dict(synth={"chain_length": 1}),        # one derivation before the answer
    "functional-small": dict(size="small"),                      # the larger testbed model (6 layers, 256 wide)
    "functional-b32": dict(batch_size=32),                       # 4x the traces per step: as many traces in 1/4 steps
    "functional-b32-lr6e-3": dict(batch_size=32, base_lr=6e-3),
}
SAMPLED = 0.6  # the paper's temperature (top-p 1, as notebooks/params/default.yaml samples)


def design(name: str) -> dict:
    return {**BASE, **DESIGNS[name]}


def curve_design(name: str, steps: int, seed: int = 0) -> dict:
    """The curve ``name``'s base model (``seed``: its traces, initialisation and order) trained for ``steps``
    optimisation steps, as a design (so its data, base model and fine-tuning are built as a design's)."""
    c = {**CURVE_BASE, **CURVES[name]}
    synth = {**CURVE_BASE["synth"], **c["synth"]}
    return {**BASE, **c, "base_synth": {**synth, "style": "concise"}, "ft_synth": {**synth, "style": "long"},
            "base_epochs": steps * c["batch_size"] / c["n_base"], "base_seeds": (seed,),
            "base_name": f"base-{c['size']}-steps{steps}" + (f"-seed{seed}" if seed else "")}


def build_data(d: dict, root: Path, base_seed: int) -> dict[str, Path]:
    """Base traces (seed-dependent), fine-tuning traces and held-out problems; a fine-tuning or test question
    never appears among the base traces."""
    root.mkdir(parents=True, exist_ok=True)
    style = d["ft_synth"].get("style", "long")
    paths = {"base": root / f"base-seed{base_seed}.jsonl", "test": root / "test.jsonl",
             "ft": root / ("ft.jsonl" if style == "long" else f"ft-{style}.jsonl")}
    if not paths["ft"].exists():
        dump(make_records(SynthConfig(out="", n=d["n_ft"], seed=0, **d["ft_synth"])), paths["ft"])
    if not paths["test"].exists():
        # the test problems are written in the fine-tuning style (the gold answer is what evaluation reads)
        dump(make_records(SynthConfig(out="", n=d["n_eval"], seed=0, split="test", **d["ft_synth"])), paths["test"])
    if not paths["base"].exists():
        taken = {r["question"] for r in load(paths["ft"])}
        recs = [r for r in make_records(SynthConfig(out="", n=d["n_base"] + 200, seed=100 + base_seed,
                                                    **d["base_synth"])) if r["question"] not in taken]
        dump(recs[:d["n_base"]], paths["base"])
    return paths


def oracle_selection(path: Path) -> Path:
    """The fine-tuning traces with ``selected_spans_ids`` = the planted useful segments, so ``random`` draws as
    many segments per trace as the oracle trains (a random selection of the oracle's size)."""
    out = path.with_name(f"{path.stem}-selected.jsonl" if path.stem != "ft" else "ft-selected.jsonl")
    if not out.exists():
        dump([{**r, "selected_spans_ids": [i for i, role in enumerate(r["segment_roles"]) if role in USEFUL]}
              for r in load(path)], out)
    return out


def train_base(d: dict, paths: dict, root: Path, base_seed: int) -> tuple[Path, float]:
    """A testbed tokenizer over both styles' text (so the fine-tuning words are single tokens), a fresh testbed
    Qwen2 (``d["size"]``, default tiny), trained on the base traces."""
    size = d.get("size", "tiny")
    out = root / d.get("base_name", f"base-seed{base_seed}")
    if not (out / "train_summary.json").exists():
        recs = load(paths["base"]) + load(paths["ft"])
        init = root / f"init-{size}-seed{base_seed}" if size != "tiny" else root / f"init-seed{base_seed}"
        if not (init / "config.json").exists():
            build_model(build_tokenizer(tokenizer_corpus(recs)), size, path=init, seed=base_seed)
        fit(TrainConfig(data=str(paths["base"]), out=str(out), mode="full", init=str(init), epochs=d["base_epochs"],
                        lr=d["base_lr"], batch_size=d.get("batch_size", 8), seed=base_seed, threads=1))
    return out, json.loads((out / "train_summary.json").read_text())["seconds"]


def evaluate(model: Path, test: Path, d: dict, temperature: float | None = None) -> tuple[list[dict], float]:
    """Per-problem rows of ``model`` on ``test`` (greedy unless ``temperature``, default ``d``'s), and seconds."""
    temperature = d.get("temperature", 0.0) if temperature is None else temperature
    sampled = f"-t{temperature:g}" if temperature else ""  # greedy files keep their earlier names (cached)
    out = model / f"eval-{d['n_eval']}-{d['max_new_tokens']}{sampled}.jsonl"
    t0 = time.perf_counter()
    run_evaluate(EvalConfig(model=str(model), data=[str(test)], out=str(out), max_new_tokens=d["max_new_tokens"],
                            temperature=temperature, top_p=1.0, batch_size=50, device="cpu", dtype="float32"))
    rows = sorted(load(out), key=lambda r: r["id"])
    return rows, time.perf_counter() - t0


def run_design(name: str, workdir: Path, log: Path, d: dict | None = None) -> None:
    d = d or design(name)
    root = workdir / name
    base_root = workdir / d.get("base_from", name)  # data and base models, shared by designs that name it
    root.mkdir(parents=True, exist_ok=True)
    per_problem = []  # rows (problem, base seed, fine-tune seed, mode, correct, n_tokens)
    seconds = {}
    for b in d["base_seeds"]:
        paths = build_data(d, base_root, b)
        base, seconds[f"base{b}_train"] = train_base(d, paths, base_root, b)
        rows, seconds[f"base{b}_eval"] = evaluate(base, paths["test"], d)
        per_problem += [row for s in d["ft_seeds"] for row in problem_rows(rows, d, mode="base", base_seed=b,
                                                                            ft_seed=s)]
        data = oracle_selection(paths["ft"])
        for mode in d["modes"]:
            for s in d["ft_seeds"]:
                out = root / f"ft-base{b}-{mode}-seed{s}"
                if not (out / "train_summary.json").exists():
                    fit(TrainConfig(data=str(data), out=str(out), mode=mode, init=str(base),
                                    epochs=d["ft_epochs"], lr=d["ft_lr"], seed=s, threads=1))
                seconds[f"ft_base{b}_{mode}_seed{s}"] = json.loads((out / "train_summary.json").read_text())["seconds"]
                rows, seconds[f"eval_base{b}_{mode}_seed{s}"] = evaluate(out, paths["test"], d)
                per_problem += problem_rows(rows, d, mode=mode, base_seed=b, ft_seed=s)
    dump(per_problem, root / "per_problem.jsonl")
    summary = summarise(per_problem)
    entry = {"design": name, "date": date.today().isoformat(), "machine": machine(), "config": d,
             "seconds": {k: round(v, 1) for k, v in seconds.items()}, **summary}
    with log.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry, indent=1))


def problem_rows(rows: list[dict], d: dict, **keys) -> list[dict]:
    """``evaluate``'s rows as the rows ``segkit.stats`` reads: problem, ``keys``, correct, length, hit_limit."""
    return [dict(problem=r["id"], **keys, correct=float(r["correct"][0]), length=r["n_tokens"][0],
                 hit_limit=r["n_tokens"][0] >= d["max_new_tokens"]) for r in rows]


def guesses(test: Path) -> dict[str, float]:
    """What guessing scores on ``test``: one answer for every problem (the most frequent gold answer), and a
    uniform draw over the distinct gold answers."""
    golds = Counter(r["answer"] for r in load(test))
    return {"constant_guess": max(golds.values()) / sum(golds.values()), "uniform_guess": 1 / len(golds)}


def run_curve(name: str, steps: list[int], workdir: Path, log: Path, seed: int = 0) -> None:
    """One base model per step budget, each evaluated greedy and sampled; one line per budget in ``log``."""
    for s in steps:
        d = curve_design(name, s, seed)
        root = workdir / f"curve-{name}"
        paths = build_data(d, root, seed)
        base, train_seconds = train_base(d, paths, root, seed)
        summary = json.loads((base / "train_summary.json").read_text())
        entry = {"curve": name, "seed": seed, "steps": s, "date": date.today().isoformat(), "machine": machine(),
                 "config": {k: d[k] for k in ("size", "n_base", "base_epochs", "base_lr", "batch_size",
                                              "base_synth", "n_eval", "max_new_tokens")},
                 "train_loss": summary["train_loss"], "train_seconds": train_seconds,
                 "seconds_per_step": train_seconds / s, **guesses(paths["test"])}
        for label, temperature in (("greedy", 0.0), ("sampled", SAMPLED)):
            rows, seconds = evaluate(base, paths["test"], d, temperature)
            per_problem = problem_rows(rows, d, mode=label, base_seed=seed)
            entry[label] = {**{k: stats.mean_ci(per_problem, label, "correct")[k] for k in ("mean", "ci_low",
                                                                                             "ci_high")},
                            "length": float(np.mean([r["length"] for r in per_problem])),
                            "hit_limit": float(np.mean([r["hit_limit"] for r in per_problem])),
                            "eval_seconds": round(seconds, 1)}
        with log.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        print(curve_markdown([entry]).splitlines()[-1], flush=True)


def run_probe(name: str, steps: int, workdir: Path, log: Path, ft_lr: float = BASE["ft_lr"],
              ft_epochs: float = BASE["ft_epochs"], ft_style: str = "long") -> None:
    """Fine-tune the curve's base of ``steps`` on long traces at ``ft_lr``, ``full`` against ``oracle``, sampled
    as the default report samples; logged as the design ``curve-NAME-stepsS`` (``-lrX`` off the default rate)."""
    d = {**curve_design(name, steps), "base_from": f"curve-{name}", "modes": ("full", "oracle"),
         "temperature": SAMPLED, "ft_lr": ft_lr, "ft_epochs": ft_epochs}
    d["ft_synth"] = {**d["ft_synth"], "style": ft_style}
    run_design(f"curve-{name}-steps{steps}" + (f"-lr{ft_lr:g}" if ft_lr != BASE["ft_lr"] else "")
               + (f"-ep{ft_epochs:g}" if ft_epochs != BASE["ft_epochs"] else "")
               + (f"-ft{ft_style}" if ft_style != "long" else ""), workdir, log, d)


def curve_markdown(entries: list[dict]) -> str:
    """One table row per logged curve point, the guesses beside each accuracy."""
    lines = ["| curve | seed | size | base traces | steps | epochs | mean loss | s/step | greedy acc [95% CI] | "
             "sampled acc [95% CI] | greedy / sampled length | constant / uniform guess |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        c, g, t = e["config"], e["greedy"], e["sampled"]
        acc = lambda x: f"{x['mean']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"  # noqa: E731
        lines.append(f"| {e['curve']} | {e.get('seed', 0)} | {c['size']} | {c['n_base']} | {e['steps']} | "
                     f"{c['base_epochs']:g} | {e['train_loss']:.3f} | {e['seconds_per_step']:.2f} | {acc(g)} | "
                     f"{acc(t)} | {g['length']:.0f} / {t['length']:.0f} | {e['constant_guess']:.3f} / "
                     f"{e['uniform_guess']:.3f} |")
    return "\n".join(lines)


def summarise(rows: list[dict]) -> dict:
    """Per mode: accuracy, mean length and share of outputs at the token limit, with 95% intervals over problems
    (and base models; fine-tuning seeds averaged per problem); paired differences of each fine-tuned mode against
    base and against full."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    table = []
    for mode in modes:
        row = {"mode": mode}
        for metric in ("correct", "length", "hit_limit"):
            ci = stats.mean_ci(rows, mode, metric)
            row.update({metric: ci["mean"], f"{metric}_ci_low": ci["ci_low"], f"{metric}_ci_high": ci["ci_high"]})
        table.append(row)
    pairs = [(m, "base") for m in modes if m != "base"] + [(m, "full") for m in modes if m not in ("base", "full")]
    diffs = [{"mode": m, "vs": vs, "metric": metric, **stats.paired_difference(rows, m, vs, metric)}
             for metric in ("correct", "length") for m, vs in pairs]
    return {"modes": table, "differences": diffs}


def machine() -> str:
    import os

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {platform.python_version()}"


def markdown(log: Path) -> str:
    """One table row per (design, mode) from the log."""
    lines = ["| design | mode | accuracy [95% CI] | mean length [95% CI] | at limit | vs full: accuracy | "
             "vs full: length |", "|---|---|---|---|---|---|---|"]
    for line in log.read_text().splitlines():
        e = json.loads(line)
        diff = {(x["mode"], x["vs"], x["metric"]): x for x in e["differences"]}
        for m in e["modes"]:
            cell = lambda k: f"{m[k]:.3g} [{m[k + '_ci_low']:.3g}, {m[k + '_ci_high']:.3g}]"  # noqa: E731
            vs = lambda metric: (lambda x: f"{x['diff']:+.3g} [{x['ci_low']:+.3g}, {x['ci_high']:+.3g}]"  # noqa: E731
                                 if x else "")(diff.get((m["mode"], "full", metric)))
            lines.append(f"| {e['design']} | {m['mode']} | {cell('correct')} | {cell('length')} | "
                         f"{m['hit_limit']:.2f} | {vs('correct')} | {vs('length')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--design", choices=sorted(DESIGNS), action="append", default=[])
    ap.add_argument("--workdir", default="runs/testbed_design")
    ap.add_argument("--log", default="runs/testbed_design/measurements.jsonl")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the logged designs")
    ap.add_argument("--curve", choices=sorted(CURVES), help="measure this learning curve (curves.jsonl beside --log)")
    ap.add_argument("--steps", default="250,500,1000,2000", help="the curve's base budgets, in optimisation steps")
    ap.add_argument("--probe", type=int, default=0, help="then fine-tune the curve's base of this many steps with "
                                                         "full and oracle on long traces")
    ap.add_argument("--ft-lr", type=float, default=BASE["ft_lr"], help="the probe's fine-tuning learning rate")
    ap.add_argument("--ft-epochs", type=float, default=BASE["ft_epochs"], help="the probe's fine-tuning epochs")
    ap.add_argument("--ft-style", default="long", help="the probe's fine-tuning traces (concise: the control)")
    ap.add_argument("--seed", type=int, default=0, help="the curve's base seed (its traces, init and order)")
    ap.add_argument("--curve-table", action="store_true", help="print the markdown table of the logged curves")
    args = ap.parse_args()
    workdir, log = Path(args.workdir), Path(args.log)
    curves = log.with_name("curves.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    for name in args.design:
        run_design(name, workdir, log)
    if args.curve:
        run_curve(args.curve, [int(s) for s in args.steps.split(",") if s], workdir, curves, args.seed)
        if args.probe:
            run_probe(args.curve, args.probe, workdir, log, args.ft_lr, args.ft_epochs, args.ft_style)
    if args.table:
        print(markdown(log))
    if args.curve_table:
        print(curve_markdown([json.loads(line) for line in curves.read_text().splitlines()]))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

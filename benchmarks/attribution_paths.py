"""F along the IG path, per baseline: why the paper's baseline does not converge.

IG integrates dF/d alpha along x' + alpha (x - x'); a quadrature converges only if F is smooth there. This command
evaluates F (forward passes only) on a uniform grid of alphas for the paper's baseline (pad at every position),
variants that keep the first token or every special token (attention-sink tokens), and the trace-only baseline,
and prints the net change, the total variation and the steepest slope. It also reports how close the interpolated
embeddings come to zero (where the first RMSNorm would blow them up).

    python benchmarks/attribution_paths.py --model smollm2-135m-instruct --trace 1 --points 201
"""
from __future__ import annotations

import argparse
import sys

import torch

from segkit import hardware, ig
from segkit.models import load_model, pad_token_id
from segkit.prompt import assemble
from segkit.segment import segment
from segkit.synth import SynthConfig, make_records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--trace", type=int, default=1, help="index of the testbed trace (test split, seed 0)")
    p.add_argument("--points", type=int, default=101, help="alphas on the uniform grid")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    model, tok = load_model(args.model, device="cpu", dtype="float32")
    threads = hardware.set_cpu_threads(model, args.threads)
    rec = make_records(SynthConfig(out="", n=args.trace + 1, split="test"))[args.trace]
    a = assemble(tok, rec["question"], segment(rec["solution"]), rec["answer"])
    emb = model.get_input_embeddings()
    with torch.no_grad():
        x = emb(a.input_ids[:int(a.targets.max())])[None]
        pad = emb.weight[pad_token_id(tok)]
    special = torch.tensor([int(i) in tok.all_special_ids for i in a.input_ids[:x.shape[1]]])
    full = ig.baseline_embeds(x, pad, "pad", a.trace)
    keep0, keep_special = full.clone(), full.clone()
    keep0[:, 0] = x[:, 0]
    keep_special[:, special] = x[:, special]
    baselines = {"pad (the paper's)": full, "pad, first token kept": keep0,
                 "pad, special tokens kept": keep_special, "pad-trace": ig.baseline_embeds(x, pad, "pad-trace", a.trace)}

    alphas = torch.linspace(0, 1, args.points).tolist()
    step = 1 / (args.points - 1)
    print(f"{args.model}, testbed trace {args.trace}: {x.shape[1]} tokens, trace {a.trace}, {threads} threads, "
          f"special tokens at {special.nonzero()[:, 0].tolist()}, {args.points} alphas\n")
    print("| baseline | F(x') | F(x) | net change | total variation | TV / net | steepest dF/dalpha | at alpha |")
    print("|---|---|---|---|---|---|---|---|")
    for name, x0 in baselines.items():
        same = int((x0[0] != x[0]).any(-1).int().argmax())
        F = ig.AnswerLogProb(model, a.input_ids, a.targets, prefix=x[:, :same])
        f = ig.InterpolationPath(F, x, x0, 4).value(alphas)
        jumps = f.diff().abs()
        i = int(jumps.argmax())
        net, tv = float(f[-1] - f[0]), float(jumps.sum())
        print(f"| {name} | {f[0]:.2f} | {f[-1]:.2f} | {net:.2f} | {tv:.2f} | {tv / abs(net):.1f} | "
              f"{jumps[i] / step:.0f} | {alphas[i]:.3f} |", flush=True)

    # how close does the straight line from pad to each token come to zero?
    d = x[0] - pad
    t = (-(pad * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    ratio = (pad + t[:, None] * d).norm(dim=-1) / x[0].norm(dim=-1)
    print(f"\nSmallest norm of an interpolated embedding, relative to the token's own: {float(ratio.min()):.2f} "
          f"(median {float(ratio.median()):.2f}); RMSNorm eps {getattr(model.config, 'rms_norm_eps', '?')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

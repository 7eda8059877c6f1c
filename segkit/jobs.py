"""Independent runs of the experiment (training runs, evaluations, shares of an attribution) in ``workers``
``segkit`` processes.

Each job is a ``(stage, options)`` pair, such as ``("train", TrainConfig(...))``, run as the command registry
(``segkit.commands``) names it: in this process, or as a ``segkit <stage> ...`` command line (``to_argv``). Every
run is seeded and writes its own output, so with ``threads`` set where a job runs changes no byte of what it writes
(tested).

    >>> run_parallel(cfg, [("train", TrainConfig(data="sel.jsonl", out=f"m{s}", seed=s)) for s in (0, 1)])
"""
from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from .commands import COMMANDS, to_argv
from .config import PipelineConfig

log = logging.getLogger("segkit")


def n_workers(cfg: PipelineConfig) -> int:
    """Processes for independent runs: ``cfg.workers`` (0: one per core) on a CPU, one on an accelerator."""
    from .models import resolve_device

    if resolve_device(cfg.device).type != "cpu":
        return 1
    from .hardware import cpu_cores
    return cfg.workers or cpu_cores()


def threads_per_run(cfg: PipelineConfig) -> int:
    """Torch threads of one run: ``cfg.threads``; 1 when several runs share the CPU and it is left at 0."""
    return cfg.threads or (1 if n_workers(cfg) > 1 else 0)


def set_threads(cfg: PipelineConfig) -> None:
    """Torch threads of work done in this process (removal, quality; evaluation with one worker): ``cfg.threads``
    when set."""
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)


def keyed(opts: dict) -> dict:
    """Stage options as part of a cache key. The thread count is left out: it decides speed, and only the order of
    float sums (the last digits, ``segkit.hardware.set_cpu_threads``), so a result made under another thread count
    is reused rather than recomputed (it may then differ from a fresh run in those last digits)."""
    return {k: v for k, v in opts.items() if k != "threads"}


def run_parallel(cfg: PipelineConfig, jobs: list) -> None:
    """Run ``jobs``, ``(stage, options)`` pairs (or ``(stage, options, environment)``): in this process one after
    the other, or with ``n_workers(cfg) > 1`` as that many ``segkit <stage> ...`` commands at a time, each with
    ``threads_per_run`` torch threads. A failed run raises with its last output."""
    n = min(n_workers(cfg), len(jobs))
    if n <= 1:
        for stage, opts, *_ in jobs:
            module, _, run, _ = COMMANDS[stage]
            getattr(importlib.import_module(module), run)(opts)
        return
    threads = str(threads_per_run(cfg) or 1)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def launch(job):
        stage, opts, extra = (*job, {})[:3]
        cmd = [sys.executable, "-m", "segkit", stage, *to_argv(opts)]
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
        if done.returncode:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"`segkit {stage}` failed (exit {done.returncode}) for {getattr(opts, 'out', '')}:"
                               f"\n{tail}")
        log.info("%s", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"segkit {stage} done")

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(launch, jobs))

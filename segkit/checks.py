"""What ``segkit report --check`` says of a parameter file without running it: the data files its runs read (present,
or made by ``make_data``, and readable), its models (loadable here), and the work it asks for. The run refuses the
same data problems at its start (``data_problems``).

    >>> print(check_params("notebooks/params/paper.yaml", "notebooks"))   # raises CheckError when files are missing
"""
from __future__ import annotations

from pathlib import Path

from .config import defaults
from .params import CheckError, Run, data_to_make, load_params


def model_problem(name: str | None) -> str | None:
    """None if ``name`` loads here (testbed, scratch, alias, .gguf, folder, hub id in the local Hugging Face cache);
    else one line saying how to bring it."""
    from .models import locate

    if name in (None, "scratch"):
        return None
    try:
        where, gguf = locate(name)
    except FileNotFoundError as e:
        return str(e)
    if gguf or Path(where).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(where, "config.json"), str):
        return None
    return (f"model {name!r} is not in the local Hugging Face cache: on a machine with internet run "
            f"`hf download {name} --local-dir models/{Path(name).name}`, copy the folder here and name it "
            f"(e.g. base_model: models/{Path(name).name}), or let the Hub be reachable")


def _count(path: Path) -> tuple[int, int]:
    """(records, characters of question + solution) of a JSON Lines file."""
    from .records import load

    recs = load(path)
    return len(recs), sum(len(str(r.get("question", r.get("problem", "")))) + len(str(r.get("solution", "")))
                          for r in recs)


def estimate(cfg, made: dict[Path, dict], trains: bool = True) -> list[str]:
    """The work one run's configuration asks for, in the units that size it: traces x tokens x IG points,
    training tokens, generated tokens (upper bound: every sample runs to max_new_tokens). Tokens are counted as
    characters / 4 (no tokenizer is loaded); ``made``: files ``make_data`` will write, with their options."""
    from .attribute import AttributeConfig
    from .evaluate import EvalConfig
    from .modes import unavailable
    from .pipeline import has_planted_roles
    from .train import TrainConfig

    ig, tr, ev = (defaults(AttributeConfig) | cfg.attribute, defaults(TrainConfig) | cfg.train,
                  defaults(EvalConfig) | cfg.generate)
    data = Path(cfg.train_data) if cfg.train_data else None
    n_traces, per_trace, tokens = cfg.n_attribute or "all", None, "? (file missing)"
    if data is None or data in made:  # the testbed, or synthetic stand-ins: ~300 tokens a trace
        n = made[data]["n"] if data in made else cfg.n_train
        n_traces, per_trace, tokens = min(n, cfg.n_attribute or n), 300, "~300"
    elif data.exists():
        n, chars = _count(data)
        n_traces, per_trace = min(n, cfg.n_attribute or n), chars / 4 / max(n, 1)
        tokens = f"~{per_trace:,.0f}"
    points = f"{ig['steps']}" if ig["method"] != "adaptive" else f"{ig['steps']}-{ig['max_steps']} (adaptive)"
    lines = [f"attribution: {n_traces} traces x {tokens} tokens x {points} IG points"]
    if not trains:
        return lines
    roles = data is None or (made[data]["roles"] if data in made else not data.exists() or has_planted_roles(data))
    # modes that need the planted roles (oracle) are skipped on real data: the mode registry says which
    skipped = unavailable(cfg.modes, [{"segment_roles": []} if roles else {}])
    modes = [m for m in cfg.modes if m not in skipped]
    n_bases = 1 if cfg.base_model else len(cfg.base_seeds)  # the testbed trains one base model per base seed
    if not cfg.base_model:
        base_epochs = (defaults(TrainConfig) | cfg.base_train)["epochs"]
        lines.append(f"base models: {n_bases} x {cfg.n_base} traces ({cfg.base_synth}) x {base_epochs} epochs, "
                     f"from scratch")
    if not cfg.base_model and not cfg.attributor and n_bases > 1:  # each base model attributes its own selection
        lines.append(f"attribution by the other base models: {n_bases - 1} x {n_traces} traces x {tokens} tokens x "
                     f"{points} IG points")
    n_models = len(modes) * len(cfg.seeds) * n_bases
    total = f" = ~{n_models * n_traces * per_trace * tr['epochs']:,.0f} tokens" if per_trace else ""
    lines.append(f"training: {n_models} models x {n_traces} traces x {tokens} tokens x {tr['epochs']} epochs{total} "
                 f"(max length {tr['max_length'] or 'auto'})")
    per_model, missing = 0, []
    for b in map(Path, cfg.benchmarks or []):
        if b.exists() or b in made:
            n = min(made[b]["n"] if b in made else _count(b)[0], cfg.n_eval or 10 ** 9)
            per_model += n * cfg.samples.get(b.stem, ev["n"]) * ev["max_new_tokens"]
        else:
            missing.append(f"{b.stem}: ? problems x {cfg.samples.get(b.stem, ev['n'])} x {ev['max_new_tokens']}")
    if not cfg.benchmarks:
        per_model = min(cfg.n_test, cfg.n_eval or cfg.n_test) * ev["n"] * ev["max_new_tokens"]
    lines.append(f"generation: {n_models + n_bases} models x " + " + ".join(
        ([f"<= {per_model:,} tokens"] if per_model else []) + [f"({m})" for m in missing])
                 + f", engine {ev.get('engine', 'hf')}")
    return lines


def _record_problem(path, benchmark: bool) -> str | None:
    """What keeps a run from reading ``path``: a benchmark as ``segkit evaluate`` reads it, or a training file's
    first record without a question, solution and answer; None when it reads."""
    from .evaluate import read_benchmark
    from .records import RecordError, read_jsonl, require

    if Path(path).is_dir():
        return f"{path}: a folder, not a JSON Lines file"
    try:
        if benchmark:
            return None if read_benchmark(path) else f"{path}: no problems in the file"
        line, rec = next(read_jsonl(path), (0, None))
        if rec is None:
            return f"{path}: no records in the file"
        require(rec, ("question", "solution", "answer"), path, line)
    except (RecordError, OSError) as e:
        return str(e)
    return None


def data_problems(spec: dict, runs: list[Run]) -> list[str]:
    """Each data file the runs read that is missing (and not made by ``make_data``) or that the run could not read,
    one line each: what a run refuses at its start, and what ``--check`` reports."""
    made, problems = data_to_make(spec), []
    for run in runs:
        cfg = run.config()
        for f, benchmark in [(cfg.train_data, False)] + [(b, True) for b in cfg.benchmarks or []]:
            if not f or Path(f) in made:
                continue
            why = _record_problem(f, benchmark) if Path(f).exists() else \
                f"file {f} is missing: see data/README.md for how to bring it"
            if why:
                problems.append(why)
    return list(dict.fromkeys(problems))


def check_params(path, notebooks, workdir: Path | None = None) -> str:
    """Validate a parameter file without running anything: every name and value checked (``load_params``), every
    file present (or made by ``make_data``) and readable, every model loadable here. Returns the estimate of the
    work per run; raises ``CheckError`` listing what is missing."""
    from .synth import SynthConfig

    spec, runs = load_params(path, notebooks, workdir)
    made = {p: {"n": defaults(SynthConfig)["n"], "roles": False} | o for p, o in data_to_make(spec).items()}
    problems, lines, lines_seen = data_problems(spec, runs), [], set()
    for run in runs:
        cfg = run.config()
        for key in ("base_model", "attributor"):
            why = model_problem(getattr(cfg, key))
            if why:
                problems.append(f"{key}: {why}")
        trains = "compare_modes(" in run.notebook.read_text()  # the notebook that fine-tunes and evaluates
        try:
            new = [line for line in estimate(cfg, made, trains) if line not in lines_seen]
        except (OSError, ValueError):  # a data file it cannot read: named among the problems above
            new = ["(no estimate: a data file cannot be read)"]
        lines_seen.update(new)
        lines += [f"{run.name}:"] + [f"  {line}" for line in new or ["(no new work: cached by the runs above)"]]
    problems = list(dict.fromkeys(problems))
    report = "\n".join(lines)
    if problems:
        raise CheckError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems) + "\nestimate:\n" + report)
    return f"{path}: every parameter, file and model is in place\n{report}"

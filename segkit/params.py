"""Parameter files of ``segkit report``: read them into runs, make their stand-in data, check them without running.

A parameter file (YAML) has ``parameters`` shared by every notebook (each takes those its ``parameters`` cell
declares), ``runs`` (the notebooks in order, each with its own ``parameters`` on top) and optionally ``make_data``:
files written with ``segkit synth`` before the notebooks run, when missing, as a user's data file would be (planted
roles dropped unless ``roles: true``), so that a CPU run can take the real-data path. Paths in a parameter file
(``train_data``, ``benchmarks``, local models, ``make_data``) are relative to the folder ``segkit report`` runs in.

    >>> spec, runs = load_params("notebooks/params/smollm2.yaml", "notebooks", workdir="runs/smollm2")
    >>> print(check_params("notebooks/params/paper.yaml", "notebooks"))   # raises CheckError when files are missing
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# injected into every notebook that declares them, so that all runs of one parameter file share one work folder
WORKDIR_PARAMS = {"workdir": "", "choice_file": "tau_beta.json"}
# injected likewise, with the report's output folder: where a notebook writes its headline numbers (the runner stamps
# them with the run's name, time and versions, and index.html shows them); "{name}" is the run's name
OUTPUT_PARAMS = {"headline_file": "{name}.json"}
# sources given as paths: made relative to the notebook's folder (the kernel's working folder) when they exist
PATH_PARAMS = ("train_data", "benchmarks", "base_model", "attributor")


class CheckError(ValueError):
    """A parameter file names files or models that are not here: one line each, saying how to bring them."""


@dataclass
class Run:
    name: str
    notebook: Path
    title: str
    parameters: dict  # as the notebook gets them (paths relative to its folder)
    given: dict = field(default_factory=dict)  # as the parameter file gives them (paths relative to the cwd)


def read_spec(path) -> dict:
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'runs' (and optionally 'parameters', "
                         "'make_data')")
    unknown = set(spec) - {"parameters", "runs", "make_data"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected parameters, runs, make_data")
    return spec


def _relative_paths(params: dict, folder: Path) -> dict:
    """Source paths that exist here, rewritten relative to ``folder``; files (train_data, benchmarks) always."""
    def rel(value, always):
        return os.path.relpath(Path(value).resolve(), folder) if always or Path(value).exists() else value

    out = dict(params)
    for key in PATH_PARAMS:
        value, always = out.get(key), key in ("train_data", "benchmarks")
        if isinstance(value, str):
            out[key] = rel(value, always)
        elif isinstance(value, list):
            out[key] = [rel(v, always) for v in value]
    return out


def load_params(path, notebooks, workdir: Path | None = None, out: Path | None = None) -> tuple[dict, list[Run]]:
    """``(the YAML as read, the runs in order)``; each run's parameters are PipelineConfig's defaults, then the
    shared ones, then its own (which must all be declared: a typo fails here, not in the notebook), then the work
    folder and (given ``out``, the report's output folder) ``OUT/<run name>.json`` as ``headline_file``; each run
    takes the names its notebook declares."""
    import papermill

    path = Path(path)
    spec = read_spec(path)
    shared = spec.get("parameters") or {}
    workdir = Path(workdir if workdir is not None else Path("runs") / path.stem).resolve()
    runs, names = [], set()
    for i, item in enumerate(spec["runs"], 1):
        if isinstance(item, str):
            item = {"notebook": item}
        nb = Path(notebooks) / item["notebook"]
        if not nb.exists():
            raise FileNotFoundError(f"{path}: run {i}: no notebook {nb}")
        name = item.get("name", nb.stem)
        if name in names:
            raise ValueError(f"{path}: two runs are named {name!r}; give one a 'name'")
        names.add(name)
        declared = set(papermill.inspect_notebook(str(nb)))
        own = item.get("parameters") or {}
        unknown = set(own) - declared
        if unknown:
            raise ValueError(f"{path}: run {name!r}: {nb.name} has no parameters {sorted(unknown)}; "
                             f"it declares {sorted(declared)}")
        # a pipeline name the file leaves out takes PipelineConfig's default, not the notebook's (tiny, for tests)
        given = {k: v for k, v in pipeline_defaults().items() if k in declared and k != "workdir"} | \
            {k: v for k, v in shared.items() if k in declared} | own
        params = _relative_paths(given, nb.parent.resolve())
        for key, rel in WORKDIR_PARAMS.items():
            if key in declared and key not in own:  # relative to the kernel's folder: no machine paths in reports
                params[key] = os.path.relpath(workdir / rel if rel else workdir, nb.parent.resolve())
        for key, rel in OUTPUT_PARAMS.items():
            if out is not None and key in declared and key not in own:
                params[key] = os.path.relpath(Path(out).resolve() / rel.format(name=name), nb.parent.resolve())
        runs.append(Run(name, nb, item.get("title", name), params, given))
    return spec, runs


def _defaults(cls) -> dict:
    """A dataclass's field defaults, without constructing it (stage configs check their files when built)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def pipeline_defaults() -> dict:
    from .config import PipelineConfig

    return _defaults(PipelineConfig)


def data_to_make(spec: dict) -> dict[Path, dict]:
    """The ``make_data`` section: ``{file: segkit synth options (+ roles)}``, the option names checked."""
    from .synth import SynthConfig

    known = {f.name for f in dataclasses.fields(SynthConfig)} - {"out"} | {"roles"}
    out = {}
    for name, opts in (spec.get("make_data") or {}).items():
        bad = set(opts or {}) - known
        if bad:
            raise ValueError(f"make_data: {name}: {sorted(bad)} are not segkit synth options; known: {sorted(known)}")
        out[Path(name)] = dict(opts or {})
    return out


def make_data(spec: dict) -> list[Path]:
    """Write the ``make_data`` files that are missing (``segkit synth`` options per file); returns those written."""
    from .records import dump
    from .synth import SynthConfig, make_records

    written = []
    for path, opts in data_to_make(spec).items():
        if path.exists():
            continue
        roles = opts.pop("roles", False)
        records = make_records(SynthConfig(out=str(path), **opts))
        if not roles:  # as a user's data file: LIMO's fields, no planted roles
            records = [{k: v for k, v in r.items() if k != "segment_roles"} for r in records]
        dump(records, path)  # atomic: a half-written file is never taken for the user's data
        written.append(path)
    return written


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
    from .pipeline import has_planted_roles
    from .train import TrainConfig

    ig, tr, ev = (_defaults(AttributeConfig) | cfg.attribute, _defaults(TrainConfig) | cfg.train,
                  _defaults(EvalConfig) | cfg.generate)
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
    modes = [m for m in cfg.modes if m != "oracle" or roles]  # oracle needs planted roles (skipped on real data)
    n_bases = 1 if cfg.base_model else len(cfg.base_seeds)  # the testbed trains one base model per base seed
    if not cfg.base_model:
        base_epochs = (_defaults(TrainConfig) | cfg.base_train)["epochs"]
        lines.append(f"base models: {n_bases} x {cfg.n_base} traces ({cfg.base_synth}) x {base_epochs} epochs, "
                     f"from scratch")
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


def check_params(path, notebooks, workdir: Path | None = None) -> str:
    """Validate a parameter file without running anything: every parameter known to its notebook and to
    ``PipelineConfig`` (stage options included), every file present (or made by ``make_data``), every model
    loadable here. Returns the estimate of the work per run; raises ``CheckError`` listing what is missing."""
    from .config import config_from
    from .synth import SynthConfig

    spec, runs = load_params(path, notebooks, workdir)
    made = {p: {"n": _defaults(SynthConfig)["n"], "roles": False} | o for p, o in data_to_make(spec).items()}
    problems, lines, lines_seen = [], [], set()
    for run in runs:
        cfg = config_from(run.given, notebook=True)
        for f in [cfg.train_data] + list(cfg.benchmarks or []):
            if f and not Path(f).exists() and Path(f) not in made:
                problems.append(f"file {f} is missing: see data/README.md for how to bring it")
        for key in ("base_model", "attributor"):
            why = model_problem(getattr(cfg, key))
            if why:
                problems.append(f"{key}: {why}")
        trains = "compare_modes(" in run.notebook.read_text()  # the notebook that fine-tunes and evaluates
        new = [line for line in estimate(cfg, made, trains) if line not in lines_seen]
        lines_seen.update(new)
        lines += [f"{run.name}:"] + [f"  {line}" for line in new or ["(no new work: cached by the runs above)"]]
    problems = list(dict.fromkeys(problems))
    report = "\n".join(lines)
    if problems:
        raise CheckError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems) + "\nestimate:\n" + report)
    return f"{path}: every parameter, file and model is in place\n{report}"

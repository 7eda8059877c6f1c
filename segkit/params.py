"""Parameter files of ``segkit report``: read them into runs, make their stand-in data, check them without running.

A parameter file (YAML) has ``parameters`` shared by every notebook, ``runs`` (the notebooks in order, each with its
own ``parameters`` on top) and optionally ``make_data``: files written with ``segkit synth`` before the notebooks
run, when missing, as a user's data file would be (planted roles dropped unless ``roles: true``), so that a CPU run
can take the real-data path. Paths in a parameter file (``train_data``, ``benchmarks``, local models,
``make_data``) are relative to the folder ``segkit report`` runs in.

A parameter file is data: it is read as YAML's JSON part (a tag such as ``!!binary``, ``!!set`` or ``!!python/...``,
a key given twice, a syntax error: ``file:line: ...``), every name is a ``PipelineConfig`` field or a name the
run's notebook declares (the closest one is suggested), every value is checked by ``segkit.config`` (the pipeline's
against their fields, a notebook's own against its default's type), run names are names (no path), and the data
files' records are read for the fields the run needs, all before anything runs. A notebook takes the pipeline's
values as one mapping ``pipeline_params`` (and any field it declares by name).

    >>> spec, runs = load_params("notebooks/params/smollm2.yaml", "notebooks", workdir="runs/smollm2")

``segkit.checks`` is ``--check``: the data files and models these runs need, and the work they ask for.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import yaml

# injected into every notebook that declares them, so that all runs of one parameter file share one work folder
WORKDIR_PARAMS = {"workdir": "", "choice_file": "tau_beta.json"}
# injected likewise, with the report's output folder: where a notebook writes its headline numbers (the runner stamps
# them with the run's name, time and versions, and index.html shows them); "{name}" is the run's name
OUTPUT_PARAMS = {"headline_file": "{name}.json"}
# the notebook parameter that takes the run's pipeline values (every PipelineConfig field but workdir) as a mapping
PIPELINE = "pipeline_params"
RUNNER_SET = {*WORKDIR_PARAMS, *OUTPUT_PARAMS, PIPELINE}  # where a run reads and writes: never the file's to say
# sources given as paths: made relative to the notebook's folder (the kernel's working folder) when they exist
PATH_PARAMS = ("train_data", "benchmarks", "base_model", "attributor")
RUN_KEYS = ("notebook", "name", "title", "parameters")


class CheckError(ValueError):
    """A parameter file names files or models that are not here: one line each, saying how to bring them."""


@dataclass
class Run:
    name: str
    notebook: Path
    title: str
    parameters: dict  # as the notebook gets them (paths relative to its folder)
    given: dict = field(default_factory=dict)  # the pipeline's values as the file gives them (paths: the cwd's)

    def config(self):
        from .config import config_from

        return config_from(self.given)

    def sources(self) -> list[str]:
        """The data files and models the notebook is given, relative to its folder."""
        values = [p.get(k) for p in (self.parameters, self.parameters.get(PIPELINE) or {}) for k in PATH_PARAMS]
        return [v for value in values for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]


class _DataLoader(yaml.SafeLoader):
    """YAML's JSON part: a tag that builds anything else (``!!binary``, ``!!set``, ``!!timestamp``, ...; the
    ``!!python/...`` ones SafeLoader refuses already), a key given twice and an alias (``*name``: a few lines of
    them expand to billions of values) are errors at their line."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"an alias (*{event.anchor}) is not a parameter: write "
                                                          "the value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key_node.tag != "tag:yaml.org,2002:merge":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice (also at line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _refuse(loader, node):
    raise yaml.constructor.ConstructorError(None, None, f"a {node.tag.rsplit(':', 1)[-1]} value is not a parameter "
                                                        "(plain data only; quote it to pass a string)", node.start_mark)


for _tag in ("binary", "set", "timestamp", "omap", "pairs"):
    _DataLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)


def check_name(name, what: str) -> str:
    """``name`` when it names a file inside its folder (a run, a notebook, a parameter file's stem): no path
    separator, no leading dot (``..`` included), nothing unprintable; else ValueError."""
    if not isinstance(name, str) or not name or name.startswith(".") or ".." in name or not name.isprintable() \
            or any(sep in name for sep in "/\\"):
        raise ValueError(f"{what} {name!r} is not a name: no path separators, '..' or leading dot (it names a "
                         "file inside its folder)")
    return name


def read_spec(path) -> dict:
    path = Path(path)
    check_name(path.stem, "the parameter file's stem")  # it names the work and report folders
    try:
        spec = yaml.load(path.read_bytes(), Loader=_DataLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else path.read_bytes()[:e.position].count(b"\n") + 1 \
            if isinstance(e, yaml.reader.ReaderError) else None  # a byte that is not UTF-8 has a position only
        where = f"{path}:{line}" if line else str(path)
        raise ValueError(f"{where}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty list 'runs' (and optionally 'parameters', "
                         "'make_data')")
    unknown = set(spec) - {"parameters", "runs", "make_data"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected parameters, runs, make_data")
    for key in ("parameters", "make_data"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ValueError(f"{path}: '{key}' must be a mapping of names to values")
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


def _run_item(path: Path, i: int, item, notebooks) -> tuple[Path, str, str, dict]:
    """``(notebook, name, title, own parameters)`` of the ``i``-th entry of ``runs``, each checked."""
    if isinstance(item, str):
        item = {"notebook": item}
    if not isinstance(item, dict) or "notebook" not in item:
        raise ValueError(f"{path}: run {i}: expected a notebook's file name or a mapping with 'notebook'")
    unknown = set(item) - set(RUN_KEYS)
    if unknown:
        from .config import suggest

        key = sorted(unknown)[0]
        raise ValueError(f"{path}: run {i}: unknown key {key!r}{suggest(key, RUN_KEYS)}; a run has "
                         f"{', '.join(RUN_KEYS)}")
    nb = Path(notebooks) / check_name(item["notebook"], f"{path}: run {i}: notebook")
    if nb.suffix != ".ipynb" or not nb.is_file():
        from .config import suggest

        names = sorted(p.name for p in Path(notebooks).glob("*.ipynb"))
        raise FileNotFoundError(f"{path}: run {i}: no notebook {nb}{suggest(nb.name, names)}; the notebooks "
                                f"are {', '.join(names)}")
    name = check_name(item.get("name", nb.stem), f"{path}: run {i}: name")
    if name == "index":
        raise ValueError(f"{path}: run {i}: 'index' names the report's index page (index.html): give the run "
                         "another name")
    title, own = item.get("title", name), item.get("parameters") or {}
    for key, value, kind in (("title", title, str), ("parameters", own, dict)):
        if not isinstance(value, kind):
            raise ValueError(f"{path}: run {name!r}: '{key}' must be {'a string' if kind is str else 'a mapping'}")
    return nb, name, title, own


def _declared(nb: Path) -> dict:
    """The names ``nb``'s parameters cell declares, each with the type of its default (``object``: any data)."""
    import logging

    import papermill

    def kind(default: str):
        try:
            value = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            return object
        return object if value is None else list if isinstance(value, tuple) else type(value)

    quiet, level = logging.getLogger("papermill"), logging.getLogger("papermill").level
    quiet.setLevel(logging.WARNING)  # its "Input Notebook: ..." line per notebook is no news when checking
    try:
        return {name: kind(p["default"]) for name, p in papermill.inspect_notebook(str(nb)).items()}
    finally:
        quiet.setLevel(level)


def load_params(path, notebooks, workdir: Path | None = None, out: Path | None = None) -> tuple[dict, list[Run]]:
    """``(the YAML as read, the runs in order)``, every name and value checked (the module's docstring). A run's
    pipeline values are PipelineConfig's defaults, then the shared ones, then its own; its notebook gets them as
    ``pipeline_params`` (and by name where it declares a field), with its own declared names, the work folder and
    (given ``out``, the report's output folder) ``OUT/<run name>.json`` as ``headline_file``."""
    from .config import check_value, config_from

    path = Path(path)
    spec = read_spec(path)
    shared = spec.get("parameters") or {}
    workdir = Path(workdir if workdir is not None else Path("runs") / path.stem).resolve()
    items = [_run_item(path, i, item, notebooks) for i, item in enumerate(spec["runs"], 1)]
    try:
        data_to_make(spec)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    fields, declared = set(pipeline_defaults()) - {"workdir"}, {nb: _declared(nb) for nb, *_ in items}
    _check_names(path, shared, fields | {k for d in declared.values() for k in d}, "parameters")
    runs = []
    for nb, name, title, own in items:
        if name in {r.name for r in runs}:
            raise ValueError(f"{path}: two runs are named {name!r}; give one a 'name'")
        types = declared[nb]
        _check_names(path, own, fields | set(types), f"run {name!r}: parameters")
        given = {k: v for k, v in pipeline_defaults().items() if k in fields} | \
            {k: v for k, v in {**shared, **own}.items() if k in fields}
        mine = {k: v for k, v in {**shared, **own}.items() if k in types and k not in fields}
        try:
            config_from(given)
            for k, v in mine.items():
                check_value(v, types[k], k)
        except ValueError as e:
            raise ValueError(f"{path}: run {name!r}: {e}") from None
        folder = nb.parent.resolve()
        params = mine | _relative_paths({k: v for k, v in given.items() if k in types}, folder)
        if PIPELINE in types:
            params[PIPELINE] = _relative_paths(given, folder)
        for key, rel in WORKDIR_PARAMS.items():
            if key in types:  # relative to the kernel's folder: no machine paths in reports
                params[key] = os.path.relpath(workdir / rel if rel else workdir, folder)
        for key, rel in OUTPUT_PARAMS.items():
            if out is not None and key in types:
                params[key] = os.path.relpath(Path(out).resolve() / rel.format(name=name), folder)
        runs.append(Run(name, nb, title, params, given))
    return spec, runs


def _check_names(path: Path, params: dict, known: set, where: str) -> None:
    """ValueError naming the first of ``params`` that the runner sets itself or nobody declares."""
    from .config import suggest

    for key in params:
        if key in RUNNER_SET:
            raise ValueError(f"{path}: {where}: {key!r} is set by segkit report (--workdir, --out), not by the "
                             "parameter file")
        if key not in known:
            raise ValueError(f"{path}: {where}: unknown name {key!r}{suggest(key, known)}: neither a "
                             "PipelineConfig field nor a parameter its notebook declares")


def pipeline_defaults() -> dict:
    from .config import PipelineConfig, defaults

    return defaults(PipelineConfig)


def data_to_make(spec: dict) -> dict[Path, dict]:
    """The ``make_data`` section: ``{file: segkit synth options (+ roles)}``, checked: each file a relative path
    inside the folder the report runs in, each option of its type and range."""
    from .config import check_options, check_value
    from .synth import SynthConfig

    out = {}
    for name, opts in (spec.get("make_data") or {}).items():
        where, opts = f"make_data: {name}", dict(opts or {})
        if PurePath(name).is_absolute() or ".." in PurePath(name).parts or PurePath(name).suffix != ".jsonl":
            raise ValueError(f"{where}: a stand-in data file is a relative path inside this folder ending in .jsonl")
        check_value(opts.get("roles", False), bool, f"{where}.roles")
        check_options(SynthConfig, {k: v for k, v in opts.items() if k != "roles"}, where, {"out"})
        try:
            SynthConfig(out=name, **{k: v for k, v in opts.items() if k != "roles"})  # its ranges (n >= 1, ...)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        out[Path(name)] = opts
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

"""The report pipeline: run the notebooks in order with papermill from one parameter file, render them to HTML.

The parameter file (YAML, default ``notebooks/params/default.yaml``) has ``parameters`` shared by every notebook
(each gets those its ``parameters`` cell declares) and ``runs``, the notebooks in order, each with its own
``parameters`` on top; a notebook may run more than once under different names (01 with the testbed attributor
and again with SmolLM2); ``make_data`` names stand-in data files to write first (``segkit.params``). For every
run, ``OUT/NAME.ipynb`` (executed) and ``OUT/NAME.html`` are written, and ``OUT/index.html`` links them with the
parameters, package versions and run times. A notebook that declares ``headline_file`` gets ``OUT/NAME.json``
there and writes its headline numbers to it; the runner adds the run's name, title, parameter file, seconds and
versions (``segkit.headline`` defines the file's shape), and index.html shows them in tables above the notebooks
(``segkit.index``).

The pipeline's steps cache their outputs in ``WORKDIR/<parameter file stem>``, keyed on their options, inputs
and code; on top of that a run whose notebook, parameters, upstream runs and segkit code are unchanged since its
last successful execution is not executed again (after a code change every notebook runs again, and the pipeline
recomputes only the steps whose code changed). ``fresh`` deletes both caches first. ``check`` validates the
parameter file without running anything (``segkit.checks.check_params``). A failing cell stops the run: the
partial notebook (with the error) and its HTML are saved and the error is raised.

    >>> run_report(ReportConfig(params="notebooks/params/default.yaml", out="reports", workdir="runs"))
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import headline
from .index import ROOT, shown, versions, write_index
from .checks import check_params, data_problems
from .params import CheckError, Run, load_params, make_data

# the notebooks are not installed with the package: they are looked for in the source tree (a clone, or an editable
# install), then in ./notebooks; a non-editable install runs from a clone's folder or passes --notebooks
NOTEBOOKS = next((p for p in (ROOT / "notebooks", Path("notebooks")) if p.is_dir()), ROOT / "notebooks")
DEFAULT_PARAMS = NOTEBOOKS / "params" / "default.yaml"


WORKDIR_MARK = ".segkit-workdir"  # in every work folder the runner makes: --fresh deletes no folder without it


@dataclass
class ReportConfig:
    params: str = field(default=str(DEFAULT_PARAMS), metadata={
        "help": "YAML parameter file: 'parameters' for every notebook, 'runs' = the notebooks in order "
                "(notebooks/params/powered.yaml is the full design)"})
    out: str = field(default="", metadata={
        "help": "folder for the executed notebooks, HTML and index.html (default: reports/ for default.yaml, "
                "reports/<parameter file stem>/ for any other, so runs of different files never overwrite each "
                "other)"})
    workdir: str = field(default="runs", metadata={
        "help": "folder for the pipeline's cached steps (a subfolder per parameter file)"})
    notebooks: str = field(default=str(NOTEBOOKS), metadata={
        "help": "folder holding the notebooks (default: notebooks/ of the source tree, else ./notebooks: they are "
                "not installed with the package, so a non-editable install runs from a clone or passes this)"})
    check: bool = field(default=False, metadata={
        "help": "validate the parameter file without running: parameters known, files present, models loadable "
                "here, and an estimate of the work; exits non-zero naming what is missing and how to bring it"})
    fresh: bool = field(default=False, metadata={
        "help": "start over: delete this parameter file's work folder and executed notebooks first"})
    rerun: bool = field(default=False, metadata={
        "help": "execute every notebook again, reusing the pipeline's cached steps (a change of segkit's code needs "
                "no rerun: it is part of the fingerprint)"})
    only: list[str] = field(default_factory=list, metadata={
        "help": "run only these runs (by name); the others keep their earlier outputs"})
    show_code: bool = field(default=False, metadata={"help": "show code cells in the HTML (default: hidden)"})
    kernel: str = field(default="", metadata={"help": "Jupyter kernel; empty: the one named in the notebook"})
    cell_timeout: int = field(default=0, metadata={"help": "seconds one cell may run (0: no limit)"})


class ReportError(RuntimeError):
    """A notebook failed: which run, which cell, the error, and where the partial notebook was saved."""


def fingerprint(run: Run, upstream: str = "") -> str:
    """Changes when the notebook, its parameters, the data and models they name, segkit's code (what the notebooks
    call) or any earlier run changes (their outputs may feed this one)."""
    from .cache import code_hash, model_key

    h = hashlib.sha1(run.notebook.read_bytes())
    h.update(code_hash("segkit.pipeline", "segkit.analysis", "segkit.headline").encode())
    h.update(json.dumps(run.parameters, sort_keys=True, default=str).encode())
    for v in run.sources():  # a data file or local model changed in place changes the results
        p = run.notebook.parent / v
        if p.exists():
            h.update((hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() and p.suffix == ".jsonl" else
                      model_key(str(p), "/nonexistent")).encode())
    h.update(upstream.encode())
    return h.hexdigest()[:16]


def _meta(path: Path) -> dict:
    """What ``execute`` recorded in an executed notebook (fingerprint, status, seconds, ...); {} if none (or if
    ``path`` is no notebook: then the runner did not write it)."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4).metadata.get("segkit_report", {}) if path.exists() else {}
    except (OSError, ValueError, AttributeError):
        return {}


def render_html(ipynb: Path, title: str, show_code: bool = False) -> Path:
    """``ipynb`` as HTML next to it: words, tables and figures; code hidden unless ``show_code``; stream output
    (progress bars, training logs, warnings) left out (the executed notebook keeps it)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type != "stream"]
    nb.metadata["title"] = title
    exporter = HTMLExporter(exclude_input=not show_code, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def _cell_error(ipynb: Path) -> str:
    """The first error in an executed notebook: ``cell N: Name: value`` and the traceback's last lines."""
    import nbformat

    nb = nbformat.read(ipynb, as_version=4)
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(o.traceback)).strip().splitlines()
                return f"cell {i} ({cell.source.splitlines()[0][:60]!r}...): {o.ename}: {o.evalue}\n" + \
                    "\n".join(tb[-12:])
    return "no error output found in the notebook"


def execute(run: Run, out_dir: Path, cfg: ReportConfig, fp: str) -> float:
    """Execute ``run`` into ``out_dir/NAME.ipynb`` (kernel started in the notebook's folder, as Jupyter and nbval
    do, so relative paths mean the same everywhere); returns seconds. Raises ``ReportError`` on a failing cell."""
    import nbformat
    import papermill

    target = out_dir / f"{run.name}.ipynb"
    t0 = time.perf_counter()
    extra = {"execution_timeout": cfg.cell_timeout} if cfg.cell_timeout else {}
    try:
        papermill.execute_notebook(str(run.notebook), str(target), parameters=run.parameters,
                                   kernel_name=cfg.kernel or None, cwd=str(run.notebook.parent), progress_bar=True,
                                   stderr_file=sys.stderr, **extra)
        status = "ok"
    except papermill.PapermillExecutionError:
        status = "failed"
    seconds = time.perf_counter() - t0
    nb = nbformat.read(target, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # the committed reports should not name this machine's folders
        if key in pm:
            pm[key] = shown(Path(pm[key]))
    nb.metadata["segkit_report"] = {"fingerprint": fp, "status": status, "seconds": round(seconds, 1),
                                    "title": run.title, "parameters": run.parameters}
    nbformat.write(nb, target)
    render_html(target, run.title, cfg.show_code)
    if status != "ok":
        raise ReportError(f"{run.name} ({run.notebook.name}) failed at {_cell_error(target)}\n"
                          f"partial notebook saved to {target} (and {target.with_suffix('.html')})")
    return seconds


def headline_path(run: Run) -> Path | None:
    """Where ``run``'s notebook writes its headline numbers (its ``headline_file``, relative to the notebook's
    folder), or None when it declares none."""
    value = run.parameters.get("headline_file")
    return run.notebook.parent / value if isinstance(value, str) and value else None


def stamp_headline(path: Path, run: Run, params_path: Path, seconds: float) -> bool:
    """Add ``run``, ``title``, ``params`` (the parameter file's name), ``seconds`` and ``versions`` to the headline
    JSON a notebook wrote at ``path`` (atomically); False, with a warning, when it is not a JSON object."""
    from .outputs import write_json

    try:
        data = headline.read(path)
    except (OSError, ValueError) as e:
        print(f"warning: {run.name}: headline file {shown(path)} left as it is: {e}", file=sys.stderr)
        return False
    write_json(headline.stamped(data, run.name, run.title, params_path.name, seconds, versions()), path)
    return True



def report_folder(params_path) -> Path:
    """Where a parameter file's reports go by default: ``reports/`` for ``default.yaml``, ``reports/<stem>/`` else."""
    stem = Path(params_path).stem
    return Path("reports") if stem == DEFAULT_PARAMS.stem else Path("reports") / stem


def check_own_files(out_dir: Path, runs: list[Run]) -> None:
    """Refuse, before anything runs, to overwrite what the runner did not write in ``out_dir``: a run's notebook,
    HTML or headline file beside no executed notebook carrying the runner's record, or an ``index.html`` that is
    not a runner's index page (``segkit.index.is_index``)."""
    from .index import is_index

    for r in runs:
        if _meta(out_dir / f"{r.name}.ipynb"):
            continue
        headline = headline_path(r)
        own = [out_dir / f"{r.name}.ipynb", out_dir / f"{r.name}.html"] + \
            ([headline] if headline is not None and headline.resolve().parent == out_dir else [])
        for path in own:
            if path.exists():
                raise ReportError(f"{path} was not written by segkit report (no executed notebook of run "
                                  f"{r.name!r} beside it): move it away or choose another --out")
    index = out_dir / "index.html"
    if index.exists() and not is_index(index):
        raise ReportError(f"{index} is not a segkit report index page: move it away or choose another --out")


def run_report(cfg: ReportConfig) -> str:
    """Run every notebook of the parameter file in order into ``cfg.out``; returns a one-line summary."""
    from tqdm.auto import tqdm

    from .records import check_output

    params_path, notebooks = Path(cfg.params), Path(cfg.notebooks)
    if not params_path.exists():
        raise FileNotFoundError(f"{params_path}: no such parameter file")
    if not notebooks.is_dir():
        raise FileNotFoundError(f"{notebooks}: no notebooks folder; the notebooks are not installed with the "
                                "package: run from a clone of segkit or pass --notebooks CLONE/notebooks")
    workdir = Path(cfg.workdir) / params_path.stem
    if cfg.check:
        return check_params(params_path, notebooks, workdir)
    out = cfg.out or report_folder(params_path)
    spec, runs = load_params(params_path, notebooks, workdir, out=Path(out))
    problems = data_problems(spec, runs)  # what --check reports about the data, refused before anything runs
    if problems:
        raise CheckError(f"{params_path}: " + "; ".join(problems))
    # the executed notebooks must not land on the notebooks they are made from
    check_output(out, notebooks, *(r.notebook for r in runs), params_path, folder=True)
    unknown = set(cfg.only) - {r.name for r in runs}
    if unknown:
        raise ValueError(f"--only: no runs named {sorted(unknown)}; the runs are {[r.name for r in runs]}")
    out_dir = Path(out).resolve()
    check_own_files(out_dir, runs)
    if cfg.fresh and workdir.exists():
        # only a folder this runner made is deleted: never one that holds the parameter file, the notebooks or data
        check_output(workdir, params_path, notebooks, folder=True)
        if not (workdir / WORKDIR_MARK).exists():
            raise ValueError(f"--fresh: {workdir} was not made by segkit report (no {WORKDIR_MARK} inside); "
                             "delete it yourself if it should go")
        shutil.rmtree(workdir)
        for r in runs:  # only what the runner wrote: a notebook it executed (its record is inside) and that
            if _meta(out_dir / f"{r.name}.ipynb"):  # notebook's HTML, and the headline file the run names in OUT
                headline = headline_path(r)
                for path in [out_dir / f"{r.name}.ipynb", out_dir / f"{r.name}.html"] + \
                        ([headline] if headline and headline.resolve() == out_dir / f"{r.name}.json" else []):
                    path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    make_data(spec)

    # committed reports are reused only where this machine already held the pipeline's outputs when the run
    # started (on a fresh clone `make report` runs the whole pipeline; the first notebook creates the workdir, which
    # must not make the later ones look reusable), and never after a notebook upstream was executed again
    reusable = workdir.exists() and not cfg.rerun
    rows, upstream, t_start, error = [], "", time.perf_counter(), None
    bar = tqdm(runs, desc="report", unit="notebook")
    for run in bar:
        bar.set_postfix_str(run.name)
        fp = fingerprint(run, upstream)
        upstream = fp
        target = out_dir / f"{run.name}.ipynb"
        row = {"name": run.name, "title": run.title, "notebook": run.notebook.name, "status": "not-run",
               "seconds": 0.0, "parameters": run.parameters}
        rows.append(row)
        meta = _meta(target)
        if error is not None or (cfg.only and run.name not in cfg.only):
            if meta:
                row.update(status=f"earlier run ({meta.get('status', '?')})", seconds=meta.get("seconds", 0.0))
            continue
        if reusable and meta.get("fingerprint") == fp and meta.get("status") == "ok":
            row.update(status="reused", seconds=meta.get("seconds", 0.0))
            if not target.with_suffix(".html").exists():
                render_html(target, run.title, cfg.show_code)
            continue
        reusable = False
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / WORKDIR_MARK).touch()
            headline = headline_path(run)
            if headline is not None and headline.resolve().parent == out_dir:
                headline.unlink(missing_ok=True)  # a failed run must not leave an earlier run's numbers in place
            row.update(status="ok", seconds=execute(run, out_dir, cfg, fp))
            if headline is not None and headline.exists():
                stamp_headline(headline, run, params_path, row["seconds"])
        except ReportError as e:
            row.update(status="failed", seconds=0.0)
            error = e
    bar.close()
    index = write_index(out_dir, params_path, rows, time.perf_counter() - t_start)
    if error is not None:
        raise error
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "reused")}
    return (f"{counts['ok']} notebooks run, {counts['reused']} reused in {time.perf_counter() - t_start:.0f} s "
            f"-> {index}")
ERRORS = (ReportError, CheckError)  # errors `segkit report` prints as one line (segkit.cli)

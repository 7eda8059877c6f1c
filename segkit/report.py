"""The report pipeline: run the notebooks in order with papermill from one parameter file, render them to HTML.

The parameter file (YAML, default ``notebooks/params/default.yaml``) has ``parameters`` shared by every notebook
(each gets those its ``parameters`` cell declares) and ``runs``, the notebooks in order, each with its own
``parameters`` on top; a notebook may run more than once under different names (01 with the testbed attributor
and again with SmolLM2); ``make_data`` names stand-in data files to write first (``segkit.params``). For every
run, ``OUT/NAME.ipynb`` (executed) and ``OUT/NAME.html`` are written, and ``OUT/index.html`` links them with the
parameters, package versions and run times. A notebook that declares ``headline_file`` gets ``OUT/NAME.json``
there and writes its headline numbers to it; the runner adds the run's name, title, parameter file, seconds and
versions, and index.html shows them in tables above the notebooks (``headline_html``).

The pipeline's steps cache their outputs in ``WORKDIR/<parameter file stem>``, keyed on their options, inputs
and code; on top of that a run whose notebook, parameters, upstream runs and segkit code are unchanged since its
last successful execution is not executed again (after a code change every notebook runs again, and the pipeline
recomputes only the steps whose code changed). ``fresh`` deletes both caches first. ``check`` validates the
parameter file without running anything (``segkit.params.check_params``). A failing cell stops the run: the
partial notebook (with the error) and its HTML are saved and the error is raised.

    >>> run_report(ReportConfig(params="notebooks/params/default.yaml", out="reports", workdir="runs"))
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nbformat

from .params import CheckError, Run, check_params, load_params, make_data

ROOT = Path(__file__).resolve().parents[1]
# the notebooks are not installed with the package: they are looked for in the source tree (a clone, or an editable
# install), then in ./notebooks; a non-editable install runs from a clone's folder or passes --notebooks
NOTEBOOKS = next((p for p in (ROOT / "notebooks", Path("notebooks")) if p.is_dir()), ROOT / "notebooks")
DEFAULT_PARAMS = NOTEBOOKS / "params" / "default.yaml"
PACKAGES = ("segkit", "torch", "transformers", "peft", "numpy", "pandas", "matplotlib", "seaborn", "sacrebleu",
            "papermill", "nbconvert", "nbformat")


WORKDIR_MARK = ".segkit-workdir"  # in every work folder the runner makes: --fresh deletes no folder without it


@dataclass
class ReportConfig:
    params: str = field(default=str(DEFAULT_PARAMS), metadata={
        "help": "YAML parameter file: 'parameters' for every notebook, 'runs' = the notebooks in order "
                "(notebooks/params/full.yaml is the larger run)"})
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
    from .params import PATH_PARAMS

    h = hashlib.sha1(run.notebook.read_bytes())
    h.update(code_hash("segkit.pipeline", "segkit.analysis").encode())
    h.update(json.dumps(run.parameters, sort_keys=True, default=str).encode())
    for name in PATH_PARAMS:  # a data file or local model changed in place changes the results
        value = run.parameters.get(name)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and (run.notebook.parent / v).exists():
                p = run.notebook.parent / v
                h.update((hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() and p.suffix == ".jsonl" else
                          model_key(str(p), "/nonexistent")).encode())
    h.update(upstream.encode())
    return h.hexdigest()[:16]


def _meta(path: Path) -> dict:
    """What ``execute`` recorded in an executed notebook (fingerprint, status, seconds, ...); {} if none."""
    return nbformat.read(path, as_version=4).metadata.get("segkit_report", {}) if path.exists() else {}


def render_html(ipynb: Path, title: str, show_code: bool = False) -> Path:
    """``ipynb`` as HTML next to it: words, tables and figures; code hidden unless ``show_code``; stream output
    (progress bars, training logs, warnings) left out (the executed notebook keeps it)."""
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
            pm[key] = _shown(Path(pm[key]))
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
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except (OSError, ValueError) as e:
        print(f"warning: {run.name}: headline file {_shown(path)} left as it is: {e}", file=sys.stderr)
        return False
    data.update(run=run.name, title=run.title, params=params_path.name, seconds=round(seconds, 1),
                versions=versions())
    write_json(data, path)
    return True


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    try:
        import torch

        out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
            f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return out


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def _shown(path: Path) -> str:
    """``path`` relative to the project when inside it (the index should not name this machine's folders)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _num(x, digits: int, sign: bool = False) -> str:
    """``x`` with ``digits`` decimals (``sign``: always signed); an en dash for a missing or non-numeric value."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "\u2013"
    return "\u2013" if math.isnan(x) else f"{x:{'+' if sign else ''}.{digits}f}"


def _with_ci(value, low, high, digits: int, sign: bool = False) -> str:
    """``value [low, high]``; just ``value`` when the interval is absent."""
    text = _num(value, digits, sign)
    return text if low is None and high is None else f"{text} [{_num(low, digits, sign)}, {_num(high, digits, sign)}]"


def _table(head: list[str], body: list[list]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in body)
            + "</table>")


DIGITS = {"accuracy": 3, "mean_length": 1, "trained_token_fraction": 3}  # how many decimals each metric shows


def headline_html(data: dict) -> str:
    """HTML tables of one run's headline JSON: notebook 03's ``modes`` (accuracy and mean length with their 95%
    intervals, trained token fraction), ``differences`` and ``verdict``; notebook 01's ``auc`` (score x variant,
    role "all") and ``attributor_quality``. Raises KeyError/TypeError/ValueError on a malformed file.

    >>> headline_html({"modes": [{"mode": "full", "accuracy": 0.5, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.6,
    ...                           "mean_length": 812.34}]})   # doctest: +ELLIPSIS
    '<table>...<tr><td>full</td><td>0.500 [0.400, 0.600]</td><td>812.3</td></tr></table>'
    """
    parts = []
    if "modes" in data:
        frac = any("trained_token_fraction" in m for m in data["modes"])
        head = ["mode", "accuracy [95% CI]", "mean length [95% CI]"] + (["trained token fraction"] if frac else [])
        body = [[m["mode"]] + [_with_ci(m[k], m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high"), DIGITS[k])
                               for k in ("accuracy", "mean_length")]
                + ([_with_ci(m.get("trained_token_fraction"), m.get("trained_token_fraction_ci_low"),
                             m.get("trained_token_fraction_ci_high"), 3)] if frac else [])
                for m in data["modes"]]
        parts.append(_table(head, body))
        if data.get("differences"):
            body = [[d["mode"], d["vs"], d["metric"],
                     _with_ci(d["diff"], d.get("ci_low"), d.get("ci_high"), DIGITS.get(d["metric"], 3), sign=True)]
                    for d in data["differences"]]
            parts.append("<p>Paired differences (mode minus vs):</p>"
                         + _table(["mode", "vs", "metric", "difference [95% CI]"], body))
        if data.get("verdict"):
            parts.append(f"<p class='verdict'>{html.escape(str(data['verdict']))}</p>")
    if "auc" in data:
        rows = [a for a in data["auc"] if a.get("role", "all") == "all"]
        variants = list(dict.fromkeys(a["variant"] for a in rows))
        cells = {(a["score"], a["variant"]): _with_ci(a["auc"], a.get("ci_low"), a.get("ci_high"), 3) for a in rows}
        body = [[score] + [cells.get((score, v), "") for v in variants]
                for score in dict.fromkeys(a["score"] for a in rows)]
        parts.append("<p>ROC-AUC [95% CI] of each segment score against the planted useful roles:</p>"
                     + _table(["score"] + variants, body))
        quality = data.get("attributor_quality")
        if isinstance(quality, dict) and quality:
            parts.append("<p>Attributor quality: " + ", ".join(
                f"{html.escape(str(k))} {html.escape(_num(v, 3) if isinstance(v, float) else str(v))}"
                for k, v in quality.items()) + "</p>")
    return "".join(parts)


def _headlines(out_dir: Path, rows: list[dict]) -> str:
    """The Headline section of index.html: each run's ``NAME.json`` in ``out_dir`` as tables; a run that declares
    a headline file but has none, or a file that cannot be read, gets a one-line note instead."""
    esc, parts = html.escape, []
    for r in rows:
        path = out_dir / f"{r['name']}.json"
        if not path.exists():
            if "headline_file" in r.get("parameters", {}):
                parts.append(f"<p class='note'>{esc(r['title'])}: no headline numbers ({esc(path.name)} is "
                             f"missing).</p>")
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            tables = headline_html(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            parts.append(f"<p class='note'>{esc(r['title'])}: {esc(path.name)} skipped, it could not be read "
                         f"({esc(type(e).__name__)}: {esc(str(e))}).</p>")
            continue
        if tables:
            when = f", {_minutes(data['seconds'])}" if isinstance(data.get("seconds"), (int, float)) else ""
            parts.append(f"<h3><a href='{esc(r['name'])}.html'>{esc(r['title'])}</a></h3><p class='note'>from "
                         f"<a href='{esc(path.name)}'>{esc(path.name)}</a> ({esc(str(data.get('params', '')))}"
                         f"{esc(when)})</p>{tables}")
    return "<h2>Headline</h2>\n" + "\n".join(parts) + "\n" if parts else ""


def write_index(out_dir: Path, params_path: Path, rows: list[dict], wall_seconds: float) -> Path:
    """``index.html``: the runs' headline numbers (``_headlines``), one line per run (status, time, links), then
    the parameter file and the versions."""
    esc = html.escape
    lines = []
    for r in rows:
        links = " ".join(f"<a href='{esc(f)}'>{kind}</a>" for kind, f in
                         (("HTML", f"{r['name']}.html"), ("notebook", f"{r['name']}.ipynb"))
                         if (out_dir / f).exists())
        params = esc(json.dumps(r["parameters"], indent=1, default=str))
        lines.append(f"<tr><td><a href='{esc(r['name'])}.html'>{esc(r['title'])}</a><details><summary>parameters"
                     f"</summary><pre>{params}</pre></details></td><td><code>{esc(r['notebook'])}</code></td>"
                     f"<td class='{esc(r['status'].split(' ')[0])}'>{esc(r['status'])}</td>"
                     f"<td>{_minutes(r['seconds'])}</td><td>{links}</td></tr>")
    vers = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in versions().items())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>segkit report</title>
<style>body {{font-family: sans-serif; max-width: 1140px; margin: 2em auto; line-height: 1.4}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #ccc; padding: 4px 10px; text-align: left;
vertical-align: top; white-space: nowrap}} details pre {{font-size: 11px; margin: 4px 0}}
.ok {{color: #2a7d2a}} .reused {{color: #2a5d8d}} .failed, .not-run {{color: #b22}}
pre {{background: #f6f6f6; padding: 10px; overflow-x: auto}} .note {{color: #666; font-size: 90%}}
.verdict {{max-width: 900px}}</style></head><body>
<h1>segkit report</h1>
<p>Segment-level attribution for selective learning of long reasoning traces (Wang, Liu, Ren; ICLR 2026),
reproduced with <code>segkit report</code>. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
The notebooks took {_minutes(sum(r['seconds'] for r in rows))} (reused ones count the time of their run);
this invocation took {_minutes(wall_seconds)}.</p>
{_headlines(out_dir, rows)}<h2>Notebooks</h2>
<table><tr><th>run</th><th>notebook</th><th>status</th><th>time</th><th>files</th></tr>
{''.join(lines)}</table>
<h2>Parameters</h2><p>The parameter file <code>{esc(_shown(params_path))}</code> (each run's effective parameters
are under its name above):</p>
<pre>{esc(params_path.read_text())}</pre>
<h2>Versions</h2><table>{vers}</table>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def report_folder(params_path) -> Path:
    """Where a parameter file's reports go by default: ``reports/`` for ``default.yaml``, ``reports/<stem>/`` else."""
    stem = Path(params_path).stem
    return Path("reports") if stem == DEFAULT_PARAMS.stem else Path("reports") / stem


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
    # the executed notebooks must not land on the notebooks they are made from
    check_output(out, notebooks, *(r.notebook for r in runs), params_path, folder=True)
    unknown = set(cfg.only) - {r.name for r in runs}
    if unknown:
        raise ValueError(f"--only: no runs named {sorted(unknown)}; the runs are {[r.name for r in runs]}")
    out_dir = Path(out).resolve()
    if cfg.fresh and workdir.exists():
        # only a folder this runner made is deleted: never one that holds the parameter file, the notebooks or data
        check_output(workdir, params_path, notebooks, folder=True)
        if not (workdir / WORKDIR_MARK).exists():
            raise ValueError(f"--fresh: {workdir} was not made by segkit report (no {WORKDIR_MARK} inside); "
                             "delete it yourself if it should go")
        shutil.rmtree(workdir)
        for r in runs:
            for suffix in (".ipynb", ".html", ".json"):
                (out_dir / f"{r.name}{suffix}").unlink(missing_ok=True)
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

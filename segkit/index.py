"""``index.html``: one page over a report folder's runs: their headline numbers as tables, one line per run (status,
time, links to the notebook and its HTML), the parameter file and the package versions. ``segkit.report`` writes
it after every run; the headline numbers are read through ``segkit.headline``, which defines their shape.

    >>> write_index(Path("reports"), Path("notebooks/params/default.yaml"), rows, wall_seconds=1740.0)
"""
from __future__ import annotations

import html
import json
import math
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import headline
from .stats import metric_word

ROOT = Path(__file__).resolve().parents[1]  # the project: a clone, or the source tree of an editable install
PACKAGES = ("segkit", "torch", "transformers", "peft", "numpy", "pandas", "matplotlib", "seaborn", "sacrebleu",
            "papermill", "nbconvert", "nbformat")


def versions() -> dict[str, str]:
    """Python's, segkit's and its libraries' versions and the device: the index lists them, the runner stamps them
    into every headline file."""
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


def shown(path: Path) -> str:
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


def forest_png(data: dict) -> str:
    """``<img>`` of the forest plot (``segkit.analysis.plot_forest``) of a 03 headline's ``family`` rows (else its
    ``differences``), with its ``margins``; an inline base64 PNG, so the page stays one file. A null bound (null in the
    JSON, a row without an interval) is missing, as NaN is."""
    import base64
    import io

    import matplotlib.pyplot as plt
    import pandas as pd

    from .analysis import plot_forest

    fig = plot_forest(pd.DataFrame(data.get("family") or data["differences"]), data.get("margins"),
                      data.get("differences"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return (f"<img class='forest' alt='forest plot of the paired differences' "
            f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>")


def headline_html(data: dict) -> str:
    """HTML tables of one run's headline JSON (the shape ``segkit.headline`` defines): notebook 03's ``modes`` (accuracy and mean length with their 95%
    intervals, trained token fraction) with the ``constant_guess``/``uniform_guess`` accuracies, ``differences``,
    the base-model rows ``family`` (with their forest plot, ``forest_png``), ``verdict`` (a list, one line per
    comparison; an older file's single sentence too) and ``intervals``; notebook 01's ``auc`` (score x variant,
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
        if "constant_guess" in data or "uniform_guess" in data:
            from .analysis import describe_guesses

            parts.append(f"<p>{html.escape(describe_guesses(data))}</p>")
        if data.get("differences"):
            body = [[d["mode"], d["vs"], d["metric"],
                     _with_ci(d["diff"], d.get("ci_low"), d.get("ci_high"), DIGITS.get(d["metric"], 3), sign=True)]
                    for d in data["differences"]]
            parts.append("<p>Paired differences (mode minus vs), two-level bootstrap:</p>"
                         + _table(["mode", "vs", "metric", "difference [95% CI]"], body))
        if data.get("family"):
            body = [[f["mode"], f["vs"], f["metric"],
                     _with_ci(f["diff"], f.get("ci_low"), f.get("ci_high"), DIGITS.get(f["metric"], 3), sign=True),
                     _num(f.get("p_holm"), 3), str(f.get("n_base")), metric_word(f["metric"], str(f.get("verdict")))]
                    for f in data["family"]]
            parts.append("<p>The verdict's intervals: t over base-model means (unadjusted); Holm-adjusted p and words "
                         "per metric:</p>"
                         + _table(["mode", "vs", "metric", "difference [95% t CI]", "Holm p", "base models",
                                   "verdict"], body))
        if data.get("family") or data.get("differences"):
            parts.append(forest_png(data))
        lines = data.get("verdict")
        if lines:
            lines = [lines] if isinstance(lines, str) else lines
            parts.append("<ul class='verdict'>" + "".join(f"<li>{html.escape(str(v))}</li>" for v in lines)
                         + "</ul>")
        if data.get("intervals"):
            parts.append(f"<p class='note'>{html.escape(str(data['intervals']))}</p>")
    if "auc" in data:
        rows = [a for a in data["auc"] if a.get("role", "all") == "all"]
        variants = list(dict.fromkeys(a["variant"] for a in rows))
        cells = {(a["score"], a["variant"]): _with_ci(a["auc"], a.get("ci_low"), a.get("ci_high"), 3) for a in rows}
        body = [[score] + [cells.get((score, v), "") for v in variants]
                for score in dict.fromkeys(a["score"] for a in rows)]
        parts.append("<p>ROC-AUC [95% CI] of each segment score against the planted useful roles:</p>"
                     + _table(["score"] + variants, body))
        for v in data.get("versus_model_free", []):  # IG against the best model-free score, per variant
            parts.append(f"<p class='verdict'>{html.escape(str(v['sentence']))}</p>")
        quality = data.get("attributor_quality")
        if isinstance(quality, dict) and quality:
            parts.append("<p>Attributor quality: " + ", ".join(
                f"{html.escape(str(k))} {html.escape(_num(v, 3) if isinstance(v, float) else str(v))}"
                for k, v in quality.items()) + "</p>")
    return "".join(parts)


def _headlines(out_dir: Path, rows: list[dict]) -> str:
    """The Headline section of index.html: each run's ``NAME.json`` in ``out_dir`` as tables; a run that declares
    a headline file but has none, a file that cannot be read, or one from too few traces or problems
    (``headline.too_few``) gets a one-line note instead."""
    esc, parts = html.escape, []
    for r in rows:
        path = out_dir / f"{r['name']}.json"
        if not path.exists():
            if "headline_file" in r.get("parameters", {}):
                parts.append(f"<p class='note'>{esc(r['title'])}: no headline numbers ({esc(path.name)} is "
                             f"missing).</p>")
            continue
        try:
            data = headline.read(path)
            few = headline.too_few(data)  # a number from 3 traces reads like a result; say why there is none
            tables = f"<p class='note'>{esc(few)}.</p>" if few else headline_html(data)
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
    others = _other_reports(out_dir)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>segkit report</title>
<style>body {{font-family: sans-serif; max-width: 1140px; margin: 2em auto; line-height: 1.4}}
table {{border-collapse: collapse}} td, th {{border: 1px solid #ccc; padding: 4px 10px; text-align: left;
vertical-align: top; white-space: nowrap}} details pre {{font-size: 11px; margin: 4px 0}}
.ok {{color: #2a7d2a}} .reused {{color: #2a5d8d}} .failed, .not-run {{color: #b22}}
pre {{background: #f6f6f6; padding: 10px; overflow-x: auto}} .note {{color: #666; font-size: 90%}}
.verdict {{max-width: 900px}} .forest {{max-width: 100%}}</style></head><body>
<h1>segkit report</h1>
<p>Segment-level attribution for selective learning of long reasoning traces (Wang, Liu, Ren; ICLR 2026),
reproduced with <code>segkit report</code>. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
The notebooks took {_minutes(sum(r['seconds'] for r in rows))} (reused ones count the time of their run);
this invocation took {_minutes(wall_seconds)}.</p>
{_headlines(out_dir, rows)}<h2>Notebooks</h2>
<table><tr><th>run</th><th>notebook</th><th>status</th><th>time</th><th>files</th></tr>
{''.join(lines)}</table>
{others}<h2>Parameters</h2><p>The parameter file <code>{esc(shown(params_path))}</code> (each run's effective parameters
are under its name above):</p>
<pre>{esc(params_path.read_text())}</pre>
<h2>Versions</h2><table>{vers}</table>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _other_reports(out_dir: Path) -> str:
    """Links to the reports of other parameter files in the folders under ``out_dir`` (``reports/powered/``...):
    each folder whose ``index.html`` an earlier ``write_index`` wrote."""
    esc = html.escape
    found = sorted(d.name for d in out_dir.iterdir() if d.is_dir() and is_index(d / "index.html")) \
        if out_dir.is_dir() else []
    if not found:
        return ""
    links = ", ".join(f"<a href='{esc(name)}/index.html'>{esc(name)}</a>" for name in found)
    return f"<h2>Other reports</h2><p>Runs of other parameter files: {links}.</p>\n"


def is_index(path: Path) -> bool:
    """Whether ``path`` is an index page ``write_index`` wrote (its heading), so the runner may replace it."""
    try:
        return "<h1>segkit report</h1>" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False

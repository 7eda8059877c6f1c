"""The headline JSON: a report's numbers beside its HTML (``reports/<run>.json``), so a later run, a test or a
reader's script can compare them without scraping. One definition of its shape, for everyone who writes or reads it:

- notebook 01 writes ``attribution(...)``: ``attributor``, ``n_traces``, ``attributor_quality`` (``n_problems``,
  ``answer_after_gold_trace``), ``quality_by_variant`` ({variant: the same}), ``auc`` (rows of
  ``segkit.analysis.auc_table``: ``score``, ``kind``, ``variant``, ``role``, ``auc``, ``ci_low``, ``ci_high``,
  ``within_auc``, ...), ``versus_model_free`` (rows of ``segkit.analysis.versus_model_free``: ``variant``,
  ``score``, ``best``, ``auc``, ``best_auc``, ``diff``, ``ci_low``, ``ci_high``, ``verdict``, ``sentence``),
  ``completeness_error_mean`` and ``converged_share`` (``converged_share``);
- notebook 03 writes ``finetuning(...)``: ``benchmark``, ``tau``, ``beta``, ``base_seeds``, ``seeds``, ``skipped``
  ({mode: why}) and ``segkit.analysis.finetuning_headline``'s ``modes`` (``mode``, ``accuracy``, ``mean_length``,
  ``trained_token_fraction``, each with ``_ci_low``/``_ci_high``), ``differences`` (``mode``, ``vs``, ``metric``,
  ``diff``, ``ci_low``, ``ci_high``: the two-level bootstrap), ``family`` (the same comparisons with the base model
  as the unit: ``diff``, ``ci_low``, ``ci_high`` of the t interval, ``p_value``, ``p_holm``, ``p_tost``,
  ``p_tost_holm`` (the equivalence test against the margin), ``n_base``,
  ``verdict``; null intervals with one base model), ``verdict`` (a list of strings, one per comparison),
  ``intervals`` (which interval the verdict reads, and why), ``margins`` ({metric: equivalence margin}),
  ``constant_guess`` and ``uniform_guess`` (accuracy of always the commonest gold answer, of a random one of the
  gold answers), ``resolution`` and ``recovered`` (``metric``, ``recovered``, ``ci_low``, ``ci_high``,
  ``oracle_gain`` with its interval, ``missing``: why there is no share, or null), and ``by_base_model`` (per base
  seed and mode: ``accuracy`` and ``mean_length`` over the fine-tuning seeds);
- the runner (``segkit.report``) adds ``stamped(...)``'s ``run``, ``title``, ``params``, ``seconds``, ``versions``;
- ``index.html`` (``segkit.index``) reads it with ``read`` and shows no number of a run that ``too_few`` refuses.

    >>> write_json(finetuning(cfg, results, rows), headline_file)      # notebook 03  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

# The fewest attributed traces and evaluated problems a headline number is shown from: issue 18 found the index
# headlining AUCs of 1.000 [1.000, 1.000] "computed" from 3 traces.
MIN_TRACES = 20
MIN_PROBLEMS = 50


def converged_share(records: list[dict]) -> float:
    """The share of attributed ``records`` whose completeness error is at most ``segkit.attribute.TARGET_ERROR``
    (0.05: what the adaptive scheme refines to); a trace without the field counts as not converged."""
    from .attribute import TARGET_ERROR

    return sum(r.get("completeness_error", float("inf")) <= TARGET_ERROR for r in records) / len(records)


def attribution(attributor: str, records: list[dict], quality: dict, qualities: dict, auc,
                versus: list[dict] = ()) -> dict:
    """Notebook 01's headline: the ``attributor``'s ``quality`` (``qualities`` by testbed variant), the ROC-AUC
    table ``auc`` (a DataFrame of ``segkit.analysis.auc_table`` rows), IG against the best model-free score
    (``versus``: ``segkit.analysis.versus_model_free`` rows, one per variant), and the mean completeness error and
    ``converged_share`` of the attributed ``records``."""
    from .analysis import completeness_table, describe_versus

    return {"attributor": str(attributor), "n_traces": len(records), "attributor_quality": quality,
            "quality_by_variant": qualities, "auc": auc.to_dict("records"),
            "versus_model_free": [{**v, "sentence": describe_versus(v)} for v in versus],
            "completeness_error_mean": float(completeness_table(records)["completeness_error"].mean()),
            "converged_share": converged_share(records)}


def finetuning(cfg, results, rows) -> dict:
    """Notebook 03's headline: the modes with their intervals, the paired differences, the verdict and its
    resolution (``segkit.analysis.finetuning_headline`` of the per-problem ``rows`` and the ``compare_modes``
    table ``results``), with the run's benchmark, ``tau``/``beta``, seeds and skipped modes (``cfg``)."""
    from .analysis import finetuning_headline

    bench = results[results["benchmark"] == results["benchmark"].iloc[0]]
    by_base = bench.groupby(["base_seed", "mode"], sort=False)[["accuracy", "mean_length"]].mean().reset_index()
    return {"benchmark": results["benchmark"].iloc[0], "tau": cfg.tau, "beta": cfg.beta,
            "base_seeds": list(cfg.base_seeds), "seeds": list(cfg.seeds), "skipped": results.attrs["skipped"],
            **finetuning_headline(rows, results=results),
            "by_base_model": [{"base_seed": int(r.base_seed), "mode": r.mode, "accuracy": float(r.accuracy),
                               "mean_length": float(r.mean_length)} for r in by_base.itertuples()]}


def stamped(data: dict, run: str, title: str, params: str, seconds: float, versions: dict) -> dict:
    """``data`` with what the runner knows of the run that wrote it: its name and title, the parameter file's
    name, the seconds it took (one decimal) and the package versions."""
    return {**data, "run": run, "title": title, "params": params, "seconds": round(seconds, 1), "versions": versions}


def read(path: Path) -> dict:
    """A headline file; raises OSError when it cannot be read and ValueError when it is not a JSON object."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def too_few(data: dict) -> str | None:
    """Why the headline ``data`` is too small for a headline number: fewer than ``MIN_TRACES`` attributed traces
    (01's ``n_traces``, its model scores' AUC rows) or ``MIN_PROBLEMS`` problems (01's attributor quality, 03's modes); None
    when every count it holds is enough (a count the file lacks is not checked).

    >>> too_few({"n_traces": 3, "auc": []})
    'too few traces (n = 3) for a headline number'
    """
    quality = data.get("attributor_quality")
    # the AUC rows of the method's own scores (a control on a subset, e.g. random weights, does not hide the run)
    counts = {"traces": [data.get("n_traces")] + [a.get("n_traces") for a in data.get("auc", [])
                                                  if a.get("kind", "model") == "model"],
              "problems": [quality.get("n_problems") if isinstance(quality, dict) else None]
              + [m.get("n_problems") for m in data.get("modes", [])]}
    for what, least in (("traces", MIN_TRACES), ("problems", MIN_PROBLEMS)):
        n = min((c for c in counts[what] if isinstance(c, int)), default=None)
        if n is not None and n < least:
            return f"too few {what} (n = {n}) for a headline number"
    return None

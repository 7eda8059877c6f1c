"""The headline JSON: a report's numbers beside its HTML (``reports/<run>.json``), so a later run, a test or a
reader's script can compare them without scraping. One definition of its shape, for everyone who writes or reads it:

- notebook 01 writes ``attribution(...)``: ``attributor``, ``n_traces``, ``attributor_quality`` (``n_problems``,
  ``answer_after_gold_trace``), ``quality_by_variant`` ({variant: the same}), ``auc`` (rows of
  ``segkit.analysis.auc_table``: ``score``, ``variant``, ``role``, ``auc``, ``ci_low``, ``ci_high``, ...) and
  ``completeness_error_mean``;
- notebook 03 writes ``finetuning(...)``: ``benchmark``, ``tau``, ``beta``, ``base_seeds``, ``seeds``, ``skipped``
  ({mode: why}) and ``segkit.analysis.finetuning_headline``'s ``modes`` (``mode``, ``accuracy``, ``mean_length``,
  ``trained_token_fraction``, each with ``_ci_low``/``_ci_high``), ``differences`` (``mode``, ``vs``, ``metric``,
  ``diff``, ``ci_low``, ``ci_high``), ``verdict``, ``resolution`` and ``recovered`` (``metric``, ``recovered``,
  ``ci_low``, ``ci_high``, ``oracle_gain`` with its interval, ``missing``: why there is no share, or null);
- the runner (``segkit.report``) adds ``stamped(...)``'s ``run``, ``title``, ``params``, ``seconds``, ``versions``;
- ``index.html`` (``segkit.index``) reads it with ``read``.

    >>> write_json(finetuning(cfg, results, rows), headline_file)      # notebook 03
"""
from __future__ import annotations

import json
from pathlib import Path


def attribution(attributor: str, records: list[dict], quality: dict, qualities: dict, auc) -> dict:
    """Notebook 01's headline: the ``attributor``'s ``quality`` (``qualities`` by testbed variant), the ROC-AUC
    table ``auc`` (a DataFrame of ``segkit.analysis.auc_table`` rows) and the mean completeness error of the
    attributed ``records``."""
    from .analysis import completeness_table

    return {"attributor": str(attributor), "n_traces": len(records), "attributor_quality": quality,
            "quality_by_variant": qualities, "auc": auc.to_dict("records"),
            "completeness_error_mean": float(completeness_table(records)["completeness_error"].mean())}


def finetuning(cfg, results, rows) -> dict:
    """Notebook 03's headline: the modes with their intervals, the paired differences, the verdict and its
    resolution (``segkit.analysis.finetuning_headline`` of the per-problem ``rows`` and the ``compare_modes``
    table ``results``), with the run's benchmark, ``tau``/``beta``, seeds and skipped modes (``cfg``)."""
    from .analysis import finetuning_headline

    return {"benchmark": results["benchmark"].iloc[0], "tau": cfg.tau, "beta": cfg.beta,
            "base_seeds": list(cfg.base_seeds), "seeds": list(cfg.seeds), "skipped": results.attrs["skipped"],
            **finetuning_headline(rows, results=results)}


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

"""Training modes compared: per-problem results, mode rows with 95% intervals, paired differences and the verdict.

Evaluation results enter as per-problem rows (``per_problem_rows`` over ``segkit evaluate`` output), one per
(problem, base seed, fine-tuning seed, mode); ``segkit.stats`` does the two-level bootstrap (base models, then
problems; fine-tuning seeds averaged), and differences are paired per problem and base model. The verdict takes the
base model as the unit (``family_table``: a 95% t interval over base-model means, unadjusted; a difference or an
equivalence is called only where its Holm-adjusted p, per metric, is below 0.05), since the claim is that the method
helps a base model.

    >>> rows = per_problem_rows(load("runs/eval-full.jsonl"), "full", base_seed=0, ft_seed=0) + ...
    >>> modes_table(rows)                          # mode, accuracy [ci], mean_length [ci], ...
    >>> diffs = differences_table(rows)            # selective minus full, random, ...; oracle minus full
    >>> family = family_table(rows)                # the same pairs, t over base models, Holm, verdict words
    >>> verdict(diffs, family)                     # one line per comparison, whichever way the intervals fall
    >>> guesses(rows)                              # accuracy of always answering the commonest gold answer, ...
    >>> recovered(rows)                            # IG's share of the oracle's gain over token-matched random
"""
from __future__ import annotations

from statistics import fmean
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .. import stats

METRICS = ("accuracy", "mean_length")  # the paper's two metrics, per problem: avg@n correctness, mean tokens
SHARE = "trained_token_fraction"       # beside every mode's results: output length follows the tokens trained
# what the verdict compares: the paper's selection against each baseline, and the planted-truth oracle against
# full-trace SFT (the check that selection can matter at all on this testbed) and against random segments of the
# same token count. Pairs whose modes did not run are left out, so a run without the token-matched controls
# (random-tokens, length) compares exactly what it did before they existed.
VERSUS = ("full", "random", "strength-only", "perplexity", "entropy", "oracle", "random-tokens", "length")
PAIRS = tuple(("selective", vs) for vs in VERSUS) + (("oracle", "full"), ("oracle", "random-tokens"))
# what `recovered` reads: IG's selection, the token-matched random control, the planted truth
RECOVERED = ("selective", "random-tokens", "oracle")
# the smallest accuracy differences the paper reports between selections: Table 1 (+2.1 points over full-trace SFT),
# Table 2 (up to 3 points between selection methods)
PAPER_DIFFERENCE = 0.021
# the equivalence margin per metric, stated before the run: "equivalent within M" only where the TOST against +-M
# (the 90% base-model t interval inside +-M) holds after Holm over the metric's comparisons. Accuracy: the paper's
# smallest reported gain (a difference inside it is smaller than what the paper claims); output length: none (the
# paper states no length difference that would not matter).
EQUIVALENCE = {"accuracy": PAPER_DIFFERENCE}


def per_problem_rows(eval_records: Iterable[dict], mode: str, base_seed: int = 0, ft_seed: int = 0,
                     trained_token_fraction: float | None = None) -> list[dict]:
    """``{"problem", "base_seed", "ft_seed", "mode", "accuracy", "mean_length"}`` per record of a ``segkit
    evaluate`` output file (``id``, ``correct`` and ``n_tokens`` per sample): accuracy is the problem's avg@n. The
    record's ``gold`` answer (for ``guesses``) and the model's ``trained_token_fraction``, when given, are carried
    on every row."""
    share = {} if trained_token_fraction is None else {SHARE: float(trained_token_fraction)}
    return [{"problem": r["id"], "base_seed": base_seed, "ft_seed": ft_seed, "mode": mode,
             "accuracy": fmean(float(c) for c in r["correct"]), "mean_length": fmean(r["n_tokens"]), **share,
             **({"gold": r["gold"]} if "gold" in r else {})}
            for r in eval_records]


def guesses(rows_or_records: Iterable[dict]) -> dict:
    """The accuracies a model reaches without reading the question, on the evaluated problems (rows of
    ``per_problem_rows`` or ``segkit evaluate`` records, each problem counted once): ``constant_guess``, the share
    of the most frequent gold answer (always answering it), and ``uniform_guess``, 1 / the number of distinct gold
    answers (answering one of them at random). None when no row carries its ``gold`` answer.

    >>> guesses([{"problem": "a", "gold": "4"}, {"problem": "b", "gold": "4"}, {"problem": "c", "gold": "7"}])
    {'constant_guess': 0.6666666666666666, 'uniform_guess': 0.5, 'n_problems': 3}
    """
    gold = {r.get("problem", r.get("id")): str(r["gold"]).strip() for r in rows_or_records if "gold" in r}
    if not gold:
        return {"constant_guess": None, "uniform_guess": None, "n_problems": 0}
    counts = pd.Series(list(gold.values())).value_counts()
    return {"constant_guess": float(counts.iloc[0] / len(gold)), "uniform_guess": 1 / len(counts),
            "n_problems": len(gold)}


def per_problem_results(table: pd.DataFrame, benchmark: str | None = None) -> list[dict]:
    """``per_problem_rows`` of every model in a ``segkit.pipeline.compare_modes`` table (its ``file`` column names
    each model's ``segkit evaluate`` output), on ``benchmark`` (default: the table's first)."""
    from ..records import load

    benchmark = benchmark or table["benchmark"].iloc[0]
    rows = []
    for r in table[table["benchmark"] == benchmark].itertuples():
        seed = 0 if r.seed is None or r.seed != r.seed else int(r.seed)  # the base model has no fine-tuning seed
        rows += per_problem_rows(load(r.file), r.mode, base_seed=int(getattr(r, "base_seed", 0)), ft_seed=seed,
                                 trained_token_fraction=getattr(r, SHARE, None))
    return rows


def _counts(rows: Sequence[dict], mode: str) -> dict:
    mine = [r for r in rows if r["mode"] == mode]
    return {"n_problems": len({r["problem"] for r in mine}), "n_base_seeds": len({r.get("base_seed", 0) for r in mine}),
            "n_ft_seeds": len({r.get("ft_seed", 0) for r in mine})}


def modes_table(rows: Sequence[dict], metrics: Sequence[str] = METRICS, n_resamples: int = stats.N_RESAMPLES,
                seed: int = 0) -> pd.DataFrame:
    """One row per mode (in first-seen order): ``mode``, per metric its mean and ``<metric>_ci_low``/``_ci_high``
    (95%, two-level bootstrap), ``n_problems``, ``n_base_seeds``, ``n_ft_seeds``; ``trained_token_fraction`` too
    when every row carries it (``per_problem_results`` rows do)."""
    if SHARE not in metrics and rows and all(SHARE in r for r in rows):
        metrics = (*metrics, SHARE)
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        row = {"mode": mode}
        for m in metrics:
            ci = stats.mean_ci(rows, mode, m, n_resamples, seed)
            row.update({m: ci["mean"], f"{m}_ci_low": ci["ci_low"], f"{m}_ci_high": ci["ci_high"]})
        out.append({**row, **_counts(rows, mode)})
    return pd.DataFrame(out)


def differences_table(rows: Sequence[dict], pairs: Sequence[tuple[str, str]] = PAIRS,
                      metrics: Sequence[str] = METRICS, n_resamples: int = stats.N_RESAMPLES,
                      seed: int = 0) -> pd.DataFrame:
    """``{"mode", "vs", "metric", "diff", "ci_low", "ci_high"}`` per pair (``mode`` minus ``vs``, paired per
    problem and base model) and metric; pairs whose modes are not both in ``rows`` are left out."""
    present = {r["mode"] for r in rows}
    return pd.DataFrame([{"mode": a, "vs": b, "metric": m, **stats.paired_difference(rows, a, b, m, n_resamples, seed)}
                         for a, b in pairs if a in present and b in present for m in metrics],
                        columns=["mode", "vs", "metric", "diff", "ci_low", "ci_high"])


def describe_guesses(g: dict) -> str:
    """The line printed beside every accuracy table: ``guesses``' two accuracies (``constant_guess``,
    ``uniform_guess``), the floor a fine-tuned model's accuracy is read against."""
    n = f" on the {g['n_problems']} evaluated problems" if g.get("n_problems") else ""

    def num(x):
        return "missing (no gold answers)" if x is None or x != x else f"{x:.3f}"
    return (f"Accuracy without reading the question{n}: {num(g.get('constant_guess'))} always answering the "
            f"commonest gold answer (constant guess), {num(g.get('uniform_guess'))} answering one of the distinct gold "
            "answers at random (uniform guess).")


def family_table(rows: Sequence[dict], pairs: Sequence[tuple[str, str]] = PAIRS, metrics: Sequence[str] = METRICS,
                 margins: dict | None = None, level: float = stats.LEVEL) -> pd.DataFrame:
    """The verdict's comparisons with the base model as the unit: per metric, one Holm family over the pairs whose
    modes are both in ``rows`` (``segkit.stats.family_verdicts``), with that metric's equivalence margin
    (``margins``, default ``EQUIVALENCE``). Columns ``mode``, ``vs``, ``metric``, ``diff``, ``ci_low``,
    ``ci_high`` (the t interval over base-model means, unadjusted), ``p_value``, ``p_holm`` (Holm-adjusted),
    ``p_tost``, ``p_tost_holm`` (the equivalence test against the margin; NaN without one), ``n_base``,
    ``verdict``."""
    margins = EQUIVALENCE if margins is None else margins
    present = {r["mode"] for r in rows}
    ran = [(a, b) for a, b in pairs if a in present and b in present]
    return pd.DataFrame([f for m in metrics if ran for f in stats.family_verdicts(rows, ran, m, margins.get(m), level)],
                        columns=["mode", "vs", "metric", "diff", "ci_low", "ci_high", "p_value", "p_holm", "p_tost",
                                 "p_tost_holm", "n_base", "verdict"])


def _records(table: pd.DataFrame | Sequence[dict] | None) -> list[dict]:
    return table.to_dict("records") if isinstance(table, pd.DataFrame) else list(table or ())


def verdict(differences: pd.DataFrame | Sequence[dict], family: pd.DataFrame | Sequence[dict] | None = None
            ) -> list[str]:
    """One line per comparison (``segkit.stats.verdict``): by the base-model rows ``family`` (``family_table``)
    where given, else by the bootstrap ``differences``."""
    return stats.verdict(_records(differences), _records(family))


def intervals_sentence(family: pd.DataFrame | Sequence[dict], margins: dict | None = None,
                       level: float = stats.LEVEL) -> str:
    """Which interval the verdict reads and why, and the equivalence margins (``margins``, default
    ``EQUIVALENCE``), for the base-model rows ``family``."""
    margins = EQUIVALENCE if margins is None else margins
    rows = _records(family)
    n_base = min((int(f["n_base"]) for f in rows), default=0)
    stated = ", ".join(f"{m.replace('_', ' ')} +-{v:g}" for m, v in margins.items() if v is not None) or "none"
    alpha = 1 - level
    why = (f"The verdict reads {level:.0%} t intervals over the base models' mean paired differences (unadjusted); a "
           f"difference is called only where its Holm-adjusted p < {alpha:.2g} (Holm per metric over its "
           "comparisons): the claim is about base models (does the method help a base model?), and with few base "
           "models the two-level bootstrap's percentile intervals (the differences table) are too narrow (few "
           "distinct resamples, no small-sample correction). Where every base model's mean is the same there is no "
           "spread to build an interval from, and the line says so.")
    if n_base < 2:
        why += (f" This run has {n_base} base model, so there is no interval over base models: each line gives the "
                "bootstrap interval over that model's problems, which says nothing of other base models.")
    return (f"{why} Equivalence margins, stated in advance: {stated} (\"equivalent within M\" only where the "
            f"equivalence test against +-M, TOST, has Holm-adjusted p < {alpha:.2g}, i.e. the {1 - 2 * alpha:.0%} "
            "t interval lies inside +-M with the family's correction; a difference that is not called reads \"not "
            "detected\", or \"higher (within ±M)\" where it is called and lies inside the margin too).")



def resolution(differences: pd.DataFrame | Sequence[dict], metric: str = "accuracy",
               paper: float = PAPER_DIFFERENCE, family: pd.DataFrame | Sequence[dict] | None = None) -> dict:
    """How fine the comparisons are: the median half-width of the intervals of ``metric`` differences, and whether
    a difference of the paper's size (``paper``) would lie outside such an interval, as one sentence. The intervals
    are the verdict's (``family``'s t intervals over base models) where it has them; else (fewer than 2 base models,
    no spread between them, or no ``family``) the bootstrap ``differences``, and the sentence says so."""
    fam = [f for f in _records(family) if f["metric"] == metric]
    rows = [f for f in fam if int(f["n_base"]) >= 2 and not stats.missing(f["ci_low"])]
    if rows:
        kind = f"95% t intervals over {min(int(f['n_base']) for f in rows)} base models"
    else:
        rows = [d for d in _records(differences) if d["metric"] == metric]
        n_base = max((int(f["n_base"]) for f in fam), default=None)
        why = ("no base-model intervals were given" if n_base is None else f"with {n_base} base model there is no "
               "t interval over base models" if n_base < 2 else "there is no spread between the base models' means")
        kind = f"95% two-level bootstrap intervals ({why}; these are too narrow with few base models)"
    widths = [(d["ci_high"] - d["ci_low"]) / 2 for d in rows
              if not stats.missing(d["ci_low"]) and not stats.missing(d["ci_high"])]
    if not widths:
        return {"metric": metric, "half_width": None, "paper_difference": paper, "resolvable": None,
                "sentence": f"no {metric} differences were computed."}
    half = float(np.median(widths))
    ok = half < paper
    sentence = (f"The {metric} differences have {kind} of +-{half:.3f} (median half-width), so a difference of "
                f"the paper's size ({paper:+.3f}: Table 1, selective vs full) "
                + ("would be resolved here." if ok else "cannot be resolved here: it lies inside such an interval; "
                   "more problems, seeds or base models would narrow them."))
    return {"metric": metric, "half_width": half, "paper_difference": paper, "resolvable": ok, "sentence": sentence}


def summarise_modes(table: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "mean_length",
                                                                   "trained_token_fraction"),
                    as_text: bool = False) -> pd.DataFrame:
    """Paper Tables 1-3 shape: per ``mode``, ``<metric>_mean`` and ``<metric>_std`` over seeds and ``n_seeds``,
    from the one-row-per-(mode, seed) table of ``segkit.pipeline.compare_modes``. ``as_text``: one column per
    metric holding ``"mean ± std"`` (3 significant digits), for reading."""
    present = [m for m in metrics if m in table]
    agg = table.groupby("mode", sort=False)[present].agg(["mean", "std"])
    n_seeds = table.groupby("mode", sort=False).size()
    if as_text:
        out = pd.DataFrame({m: [f"{mu:.3g} ± {sd:.2g}" if sd == sd else f"{mu:.3g}"
                                for mu, sd in zip(agg[(m, "mean")], agg[(m, "std")])] for m in present},
                           index=agg.index)
        out.insert(0, "n_seeds", n_seeds)
        return out.reset_index()
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg.insert(0, "n_seeds", n_seeds)
    return agg.reset_index()


def finetuning_headline(rows: Sequence[dict], pairs: Sequence[tuple[str, str]] = PAIRS,
                        n_resamples: int = stats.N_RESAMPLES, seed: int = 0,
                        results: pd.DataFrame | None = None) -> dict:
    """What notebook 03 writes to ``reports/<run>.json``: ``{"modes": [...], "differences": [...], "family":
    [...], "verdict": [...], "intervals", "margins", "constant_guess", "uniform_guess", "resolution",
    "recovered"}``: ``modes_table``, ``differences_table`` (two-level bootstrap), ``family_table`` (base-model t
    intervals, Holm, verdict words) and ``recovered`` as lists of plain dicts, ``verdict`` one line per comparison,
    ``intervals`` the sentence saying which interval the verdict reads (``intervals_sentence``), ``margins`` the
    equivalence margins (``EQUIVALENCE``), ``guesses``' two accuracies and ``resolution`` (read from the
    ``family`` intervals where there are any). Rows without
    ``trained_token_fraction`` take each mode's mean from the ``compare_modes`` table ``results``."""
    diffs = differences_table(rows, pairs, n_resamples=n_resamples, seed=seed)
    family = family_table(rows, pairs, margins=EQUIVALENCE)
    modes = modes_table(rows, n_resamples=n_resamples, seed=seed)
    if results is not None and SHARE not in modes:
        fraction = results.groupby("mode")[SHARE].mean()
        modes[SHARE] = [float(fraction.get(m, float("nan"))) for m in modes["mode"]]
    guess = guesses(rows)
    return {"modes": modes.to_dict("records"), "differences": diffs.to_dict("records"),
            "family": family.to_dict("records"), "verdict": verdict(diffs, family),
            "intervals": intervals_sentence(family), "margins": dict(EQUIVALENCE),
            "constant_guess": guess["constant_guess"], "uniform_guess": guess["uniform_guess"],
            "resolution": resolution(diffs, family=family),
            "recovered": recovered(rows, n_resamples=n_resamples, seed=seed)}


def recovered(rows: Sequence[dict], metrics: Sequence[str] = METRICS, n_resamples: int = stats.N_RESAMPLES,
              seed: int = 0, level: float = stats.LEVEL) -> list[dict]:
    """IG's share of the oracle's gain over token-matched random, per metric: ``(selective - random-tokens) /
    (oracle - random-tokens)``, paired per (base model, problem): 1 is as good as the planted truth, 0 no better
    than random segments of the same token count. The interval is the percentile interval of the ratio over the
    two-level bootstrap (base models, then problems; numerator and denominator resampled alike).

    One row per metric: ``metric``, ``recovered``, ``ci_low``, ``ci_high``, ``oracle_gain`` (with its
    ``_ci_low``/``_ci_high``) and ``missing``: where a mode is absent or the oracle's gain interval contains 0 (a
    share of nothing), ``recovered`` and its interval are None and ``missing`` says why."""
    absent = [m for m in RECOVERED if m not in {r["mode"] for r in rows}]
    out = []
    for metric in metrics:
        row = dict.fromkeys(("recovered", "ci_low", "ci_high", "oracle_gain", "oracle_gain_ci_low",
                             "oracle_gain_ci_high", "missing"))
        if absent:
            out.append({"metric": metric, **row, "missing": f"needs the modes {', '.join(absent)}, which did not run"})
            continue
        gained = stats.difference_matrix(rows, "selective", "random-tokens", metric)  # (base models, problems)
        gain = stats.difference_matrix(rows, "oracle", "random-tokens", metric)
        gain_resampled = stats.hierarchical_resample_means(gain, n_resamples, seed)
        low, high = stats.percentile_interval(gain_resampled, level)
        row |= {"oracle_gain": float(gain.mean()), "oracle_gain_ci_low": low, "oracle_gain_ci_high": high}
        if low <= 0 <= high:
            row["missing"] = (f"the oracle's {metric} gain over random-tokens, {gain.mean():+.3g} [{low:+.3g}, "
                              f"{high:+.3g}], is not detected: there is no gain to take a share of")
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = stats.hierarchical_resample_means(gained, n_resamples, seed) / gain_resampled
            ci = stats.percentile_interval(ratio[np.isfinite(ratio)], level)  # a resample without gain has no share
            row |= {"recovered": float(gained.mean() / gain.mean()), "ci_low": ci[0], "ci_high": ci[1]}
        out.append({"metric": metric, **row})
    return out

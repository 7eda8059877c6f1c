"""The notebooks' figures; each function takes a table from ``segkit.analysis`` and returns a matplotlib Figure.

    >>> plot_strength_cdf(strength_cdf(records))               # paper Fig. 1
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ..roles import ROLES
from .tables import GROUPS, segments_needed


def _style():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def _hue(table: pd.DataFrame) -> tuple[str | None, list | None]:
    if "role" in table:
        return "role", [r for r in ROLES if r in set(table.role)]
    return None, None


def plot_strength_consistency(table: pd.DataFrame):
    """Histograms of segment strength and consistency (stacked by planted role where the table has one)."""
    import matplotlib.pyplot as plt

    sns = _style()
    hue, order = _hue(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, col, label in ((axes[0], "strength", "segment strength (share of the trace's total)"),
                           (axes[1], "consistency", "direction consistency |sum a| / sum |a|")):
        sns.histplot(table, x=col, hue=hue, hue_order=order, multiple="stack", bins=30, ax=ax,
                     legend=ax is axes[1])
        ax.set_xlabel(label)
        ax.set_ylabel("segments")
    if hue:
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), title="planted role")
    fig.suptitle(f"Strength and consistency of {len(table)} segments in {table.trace.nunique()} traces")
    fig.tight_layout()
    return fig


def plot_joint(table: pd.DataFrame, beta: float | None = None):
    """Strength against consistency, one point per segment, with marginal densities; ``beta`` drawn as a line."""
    sns = _style()
    hue, order = _hue(table)
    g = sns.jointplot(table, x="strength", y="consistency", hue=hue, hue_order=order, height=6, s=18, alpha=0.7,
                      marginal_kws={"cut": 0} if hue else {})  # cut: no density beyond the data (both are >= 0)
    g.set_axis_labels("segment strength", "direction consistency")
    g.ax_joint.set(xlim=(0, table.strength.max() * 1.05), ylim=(-0.02, 1.05))
    if beta is not None:
        g.ax_joint.axhline(beta, color="k", ls="--", lw=1, label=f"beta = {beta:g}")
    if hue:
        sns.move_legend(g.ax_joint, "upper left", bbox_to_anchor=(1.25, 1), title="planted role")
    title = "Strength vs consistency" + (f" (dashed: beta = {beta:g})" if beta is not None else "")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def plot_strength_cdf(cdf: pd.DataFrame, shares: Sequence[float] = (0.5, 0.7, 0.9)):
    """Paper Fig. 1: cumulative strength against the fraction of segments (strongest first), per trace (thin)
    and the mean over traces on a common grid (thick), with the uniform diagonal for reference."""
    import matplotlib.pyplot as plt

    _style()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    grid = np.linspace(0, 1, 101)
    curves = []
    for _, t in cdf.groupby("trace"):
        x = np.r_[0, t.segment_fraction.to_numpy()]
        y = np.r_[0, t.cumulative_strength.to_numpy()]
        ax.plot(x, y, color="tab:blue", alpha=0.15, lw=0.8)
        curves.append(np.interp(grid, x, y))
    ax.plot(grid, np.mean(curves, axis=0), color="tab:blue", lw=2.5, label=f"mean over {len(curves)} traces")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="equal strength")
    for share, row in zip(shares, segments_needed(cdf, shares).itertuples()):
        ax.axhline(share, color="tab:red", lw=0.6, ls="--")
        ax.annotate(f"{share:.0%} of strength in {row.segment_fraction:.0%} of segments", (0.02, share),
                    ha="left", va="bottom", fontsize=9, color="tab:red")
    ax.set(xlabel="fraction of segments (strongest first)", ylabel="cumulative share of strength",
           xlim=(0, 1), ylim=(0, 1.02), title="How few segments hold most attribution")
    ax.legend(loc="lower right", bbox_to_anchor=(1, 0.08))
    fig.tight_layout()
    return fig


def plot_removal_effect(table: pd.DataFrame):
    """Paper Fig. 2: change in the answer's log-probability when a segment is removed, by strength/consistency
    group (box plot with the points)."""
    import matplotlib.pyplot as plt

    sns = _style()
    data = table.dropna(subset=["removal_effect"])
    order = [g for g in GROUPS if g in set(data.group)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.boxplot(data, y="group", x="removal_effect", order=order, ax=ax, color="lightsteelblue", fliersize=0)
    sns.stripplot(data, y="group", x="removal_effect", order=order, ax=ax, color="k", size=2.5, alpha=0.5)
    ax.axvline(0, color="grey", lw=1)
    counts = data.group.value_counts()
    ax.set_yticks(range(len(order)), [f"{g}\n(n={counts[g]})" for g in order])
    ax.set(xlabel="change in log p(correct answer) when the segment is removed", ylabel="segment group",
           title="Removing a segment: effect on the answer's confidence")
    fig.tight_layout()
    return fig


def plot_segment_features(table: pd.DataFrame):
    """Paper Fig. 3: log-perplexity, entropy and BLEU overlap with earlier segments, important vs unimportant."""
    import matplotlib.pyplot as plt

    sns = _style()
    cols = [(c, label) for c, label in (("log_perplexity", "log-perplexity (nats/token)"),
                                        ("entropy", "mean predictive entropy (nats)"),
                                        ("bleu_overlap", "BLEU overlap with earlier segments")) if c in table]
    data = table.assign(importance=np.where(table.important, "important", "unimportant"))
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 4.2), squeeze=False)
    for ax, (col, label) in zip(axes[0], cols):
        sns.boxplot(data, x="importance", y=col, order=["important", "unimportant"], hue="importance",
                    palette={"important": "tab:green", "unimportant": "tab:grey"}, ax=ax, legend=False)
        ax.set(xlabel="segment", ylabel=label)
        ax.ticklabel_format(axis="y", useOffset=False)
    fig.suptitle("Important (selected) vs unimportant segments")
    fig.tight_layout()
    return fig


def plot_completeness(comp: pd.DataFrame):
    """The convergence check: completeness error per trace (log scale), against the number of tokens."""
    import matplotlib.pyplot as plt

    sns = _style()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.scatterplot(comp, x="n_tokens", y="completeness_error", hue="ig_steps", palette="viridis", ax=ax)
    ax.set_yscale("log")
    ax.set(xlabel="tokens in the model input", ylabel="completeness error (relative)",
           title="IG convergence: |sum IG - (F(x) - F(x0))| / |F(x) - F(x0)|")
    ax.legend(title="IG steps J")
    fig.tight_layout()
    return fig


def plot_grid(grid: pd.DataFrame, columns: Sequence[str] | None = None, chosen: dict | None = None):
    """Heat maps over the tau x beta grid, one panel per column (default: ratios, the criterion and F1 where
    present); the chosen cell is outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sns = _style()
    labels = {"segment_ratio": "segments selected", "token_ratio": "tokens selected",
              "confidence_gap": "confidence gap (criterion)", "f1": "F1 vs useful roles",
              "precision": "precision vs useful roles", "recall": "recall vs useful roles"}
    columns = [c for c in (columns or ("segment_ratio", "token_ratio", "confidence_gap", "f1")) if c in grid]
    ncol = min(len(columns), 2)
    nrow = math.ceil(len(columns) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 4.6 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, columns):
        m = grid.pivot(index="beta", columns="tau", values=col).sort_index(ascending=False)
        sns.heatmap(m, annot=True, fmt=".2g", cmap="viridis", ax=ax, cbar_kws={"label": labels.get(col, col)},
                    annot_kws={"fontsize": 8})
        ax.set(title=labels.get(col, col), xlabel="tau (cumulative strength kept)",
               ylabel="beta (max consistency)")
        if chosen is not None:
            x = list(m.columns).index(min(m.columns, key=lambda t: abs(t - chosen["tau"])))
            y = list(m.index).index(min(m.index, key=lambda b: abs(b - chosen["beta"])))
            ax.add_patch(Rectangle((x, y), 1, 1, fill=False, edgecolor="red", lw=2.5))
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_modes(table: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "mean_length",
                                                              "trained_token_fraction")):
    """Paper Tables 1-3 as bars: per mode, the mean over seeds of each metric with the seeds as points."""
    import matplotlib.pyplot as plt

    sns = _style()
    labels = {"accuracy": "accuracy", "mean_length": "mean output length (tokens)",
              "trained_token_fraction": "share of trace tokens trained"}
    metrics = [m for m in metrics if m in table]
    order = list(dict.fromkeys(table["mode"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.barplot(table, x="mode", y=m, order=order, ax=ax, color="lightsteelblue", errorbar="sd")
        sns.stripplot(table, x="mode", y=m, order=order, ax=ax, color="k", size=4)
        ax.set(xlabel="training mode", ylabel=labels.get(m, m))
        ax.tick_params(axis="x", rotation=45)
        for lab in ax.get_xticklabels():
            lab.set_horizontalalignment("right")
    n_seeds = table.groupby("mode").size().max()
    fig.suptitle(f"Training modes compared ({n_seeds} seed{'s' if n_seeds > 1 else ''} each; bars: mean, "
                 f"whiskers: std)")
    fig.tight_layout()
    return fig


def plot_precision_recall(pr: pd.DataFrame):
    """Precision and recall of each selection method against the planted useful segments (mean over seeds)."""
    import matplotlib.pyplot as plt

    sns = _style()
    long = pr.melt(id_vars=["method", "seed"], value_vars=["precision", "recall", "f1"], var_name="metric")
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.barplot(long, x="method", y="value", hue="metric", ax=ax, errorbar="sd")
    ax.set(xlabel="selection method", ylabel="score vs planted useful roles", ylim=(0, 1.05),
           title="Which segments does each method select?")
    ax.legend(title="", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_differences(diffs: pd.DataFrame):
    """The two-level bootstrap differences (``differences_table``) as a forest plot (``plot_forest``)."""
    return plot_forest(diffs, title="Paired differences between modes (95% two-level bootstrap intervals)")


# how a verdict word is drawn in the forest plot: detected (filled black), equivalent (blue), the rest (open grey)
VERDICT_STYLE = {"detected": {"color": "k", "mfc": "k"}, "equivalent": {"color": "tab:blue", "mfc": "tab:blue"},
                 "other": {"color": "grey", "mfc": "white"}}


def _verdict_kind(word) -> str:
    if str(word).split(" ")[0] in ("higher", "lower"):  # also "higher (within ±M)"
        return "detected"
    return "equivalent" if str(word).startswith("equivalent") else "other"


def plot_forest(rows: pd.DataFrame | Sequence[dict], margins: dict | None = None,
                bootstrap: pd.DataFrame | Sequence[dict] | None = None, title: str | None = None):
    """Paired differences as a forest plot: one facet per metric, one point per comparison (``mode - vs``) with its
    interval, a dashed line at 0. Rows are ``family_table``'s (base-model t intervals, unadjusted: the verdict,
    from Holm-adjusted p-values, ``p_holm`` (``p_tost_holm`` for an equivalence) and ``n_base`` are written beside
    each point and set its style: filled black where detected, blue where equivalent within the margin, open grey
    otherwise) or ``differences_table``'s (no verdict column: the style follows where each bootstrap interval lies,
    ``verdict_word``). Where a row has no interval (one base model, no spread), the ``bootstrap`` row of the same
    comparison (``differences_table``) lends its interval over problems, drawn dotted; without one the point stands
    alone. ``margins`` ({metric: M}, e.g. ``EQUIVALENCE``) shades +-M. A None bound (null in JSON) is missing.
    """
    import matplotlib.pyplot as plt

    from ..stats import metric_word, missing, verdict_word

    _style()
    table = pd.DataFrame(rows)
    lent = {(b["mode"], b["vs"], b["metric"]): b for b in
            (bootstrap.to_dict("records") if isinstance(bootstrap, pd.DataFrame) else list(bootstrap or ()))}
    metrics = list(dict.fromkeys(table.metric))
    labels = {"accuracy": "accuracy difference", "mean_length": "mean output length difference (tokens)"}
    tall = table.groupby("metric").size().max()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 0.5 * tall + 1.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        d = table[table.metric == m].reset_index(drop=True)
        y = np.arange(len(d))[::-1]
        diff, low, high = (pd.to_numeric(d[k], errors="coerce").to_numpy(float) for k in ("diff", "ci_low", "ci_high"))
        for i in range(len(d)):
            word = d["verdict"].iloc[i] if "verdict" in d else None
            style = VERDICT_STYLE[_verdict_kind(verdict_word(low[i], high[i]) if word is None else word)]
            err, ls = None if np.isnan(low[i]) else [[diff[i] - low[i]], [high[i] - diff[i]]], "-"
            b = lent.get((d["mode"].iloc[i], d["vs"].iloc[i], m))
            if err is None and b is not None and not (missing(b["ci_low"]) or missing(b["ci_high"])):  # no t interval
                err, ls, word = [[diff[i] - b["ci_low"]], [b["ci_high"] - diff[i]]], ":", "over problems only"
            bars = ax.errorbar([diff[i]], [y[i]], xerr=err, fmt="o", capsize=3, **style)
            for line in bars.lines[2]:
                line.set_linestyle(ls)
            if word is not None:
                key = "p_tost_holm" if str(word).startswith("equivalent") else "p_holm"
                p = d[key].iloc[i] if key in d else None
                word = metric_word(m, word)
                note = word if missing(p) else f"{word} ({'Holm TOST' if key == 'p_tost_holm' else 'Holm'} p = {p:.2g})"
                ax.annotate(note, (1.01, y[i]), xycoords=("axes fraction", "data"), va="center", fontsize=8,
                            color=style["color"])
        ax.axvline(0, color="grey", lw=1, ls="--")
        if (margins or {}).get(m) is not None:
            ax.axvspan(-margins[m], margins[m], color="tab:blue", alpha=0.08, label=f"margin +-{margins[m]:g}")
            ax.legend(loc="best", fontsize=8)
        ax.set_yticks(y, [f"{a} - {b}" for a, b in zip(d["mode"], d.vs)])
        ax.set(xlabel=labels.get(m, m), ylabel="")
    if title is None:
        n_base = int(table["n_base"].min()) if "n_base" in table else None
        title = ("Paired differences between modes (95% two-level bootstrap intervals)" if "verdict" not in table
                 else f"Paired differences between modes (95% t intervals over {n_base} base models, unadjusted; "
                 "called where Holm-adjusted p < 0.05)" if n_base and n_base > 1
                 else "Paired differences between modes (one base model: 95% bootstrap intervals over its problems, "
                 "dotted)" if n_base and lent else "Paired differences between modes")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_auc(auc: pd.DataFrame, role: str = "all"):
    """ROC-AUC of each segment score (``auc_table``) with its 95% interval, one marker per testbed variant; 0.5
    (dashed) is a score blind to the planted useful segments. Labels of model-free scores are brown, random grey."""
    import matplotlib.pyplot as plt

    _style()
    part = auc[auc.role == role]
    scores, variants = list(dict.fromkeys(part.score)), list(dict.fromkeys(part.variant))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(scores) + 1.6))
    for j, (v, marker) in enumerate(zip(variants, "osD^v")):
        d = part[part.variant == v].set_index("score").reindex(scores)
        y = np.arange(len(scores))[::-1] + 0.15 * (j - (len(variants) - 1) / 2)
        ax.errorbar(d.auc, y, xerr=[d.auc - d.ci_low, d.ci_high - d.auc], fmt=marker, capsize=3, label=v)
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(np.arange(len(scores))[::-1], scores)
    kinds = dict(zip(part.score, part.get("kind", pd.Series("model", index=part.index))))
    for label in ax.get_yticklabels():  # the controls a model's score must beat, told apart at a glance
        label.set_color({"model-free": "tab:brown", "random": "grey"}.get(kinds.get(label.get_text()), "black"))
    ax.set(xlabel=f"ROC-AUC, planted useful vs the rest ({role} roles)", xlim=(0, 1))
    ax.legend(title="testbed", loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_length_vs_share(rows_or_table: pd.DataFrame | Sequence[dict], exclude: Sequence[str] = ("base",)):
    """Mean output length against the share of trace tokens trained, one point per mode and base model (averaged
    over fine-tuning seeds and problems), with the least-squares line and its r in the title: what the share alone
    predicts, so a length difference between modes is read against it. Takes one benchmark's ``compare_modes``
    table or ``per_problem_results`` rows; the untrained ``exclude`` modes (the base model) are left out."""
    import matplotlib.pyplot as plt

    _style()
    table = pd.DataFrame(rows_or_table)
    if "benchmark" in table and table["benchmark"].nunique() > 1:
        raise ValueError(f"one benchmark at a time, got {sorted(table['benchmark'].unique())}")
    if "base_seed" not in table:
        table["base_seed"] = 0
    table = table[~table["mode"].isin(exclude)]
    points = table.groupby(["mode", "base_seed"], sort=False)[["trained_token_fraction", "mean_length"]].mean()
    x, y = points["trained_token_fraction"].to_numpy(), points["mean_length"].to_numpy()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.scatter(x, y, color="k", s=24)
    for (mode, _), xi, yi in zip(points.index, x, y):
        ax.annotate(mode, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8)
    title = "Output length against the share of tokens trained"
    if len(points) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0:  # a line and r need spread on both axes
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 2)
        ax.plot(grid, intercept + slope * grid, color="grey", ls="--", lw=1)
        title += f" (r = {np.corrcoef(x, y)[0, 1]:.2f}, {len(points)} models)"
    ax.set(xlabel="share of trace tokens trained", ylabel="mean output length (tokens)", title=title)
    fig.tight_layout()
    return fig

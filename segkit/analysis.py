"""Analysis of attributed traces: the tables behind the notebooks' figures, and the figures.

Every function takes records as written by the pipeline (``segments``, ``attributions``, ``strength``,
``consistency``, ``tokens``, ...; ``segment_roles`` on the planted-role testbed) and returns plain values, a pandas
DataFrame, an HTML string or a matplotlib figure. Only ``segment_removal_effect`` needs a model.

    >>> table = segment_table(records, tau=0.7, beta=0.8)     # one row per segment
    >>> plot_strength_cdf(strength_cdf(records))               # paper Fig. 1
    >>> html = render_heatmap(records[0])                      # tokens coloured by IG
"""
from __future__ import annotations

import html as _html
import json
import math
from pathlib import Path
from statistics import fmean
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import prompt as P
from .score import ALWAYS_KEEP, BETA, TAU, always_kept, select, top_by_cumulative
from .synth import ROLES, USEFUL

ROLE_ORDER = ROLES  # planted roles in the order tables and legends list them
GROUPS = ("high strength, moderate consistency", "high strength, high consistency",
          "low strength, moderate consistency", "low strength, high consistency")  # paper Fig. 2
# selection methods compared in notebook 03, by their `segkit train` mode; "selective" is the paper's IG rule
METHODS = ("selective", "strength-only", "random", "perplexity", "entropy")


# ----------------------------------------------------------------------------------------------------------------
# tables over records

def is_useful(role: str) -> bool:
    """Whether a planted role is one the answer needs or checks (``segkit.synth.USEFUL``)."""
    return role in USEFUL


def importance_labels(record: dict, tau: float = TAU, beta: float = BETA) -> list[bool]:
    """Per segment, whether the paper's rule selects it (``important``) at ``(tau, beta)``."""
    chosen = set(select(record["strength"], record["consistency"], tau, beta))
    return [i in chosen for i in range(len(record["strength"]))]


def strength_group(record: dict, tau: float = TAU, beta: float = BETA) -> list[str]:
    """Per segment, its paper Fig. 2 group: high strength = among the strongest segments holding ``tau`` of the
    trace's strength; moderate consistency = consistency at most ``beta`` (the selected group is the first)."""
    high = set(top_by_cumulative(record["strength"], tau))
    return [f"{'high' if i in high else 'low'} strength, {'moderate' if c <= beta else 'high'} consistency"
            for i, c in enumerate(record["consistency"])]


def segment_table(records: Iterable[dict], tau: float = TAU, beta: float = BETA) -> pd.DataFrame:
    """One row per segment: ``trace``, ``segment`` (index), ``n_segments``, ``n_tokens``, ``strength``,
    ``consistency``, ``important`` (selected at ``tau``/``beta``), ``group`` (Fig. 2), ``log_perplexity``,
    ``entropy``, ``bleu_overlap``, and where the record has them ``role``, ``useful`` and ``removal_effect``."""
    rows = []
    for rec in records:
        n = len(rec["segments"])
        important, group = importance_labels(rec, tau, beta), strength_group(rec, tau, beta)
        bleu = bleu_overlap(rec["segments"])
        for i in range(n):
            row = {"trace": rec.get("id"), "segment": i, "n_segments": n, "n_tokens": len(rec["attributions"][i]),
                   "strength": rec["strength"][i], "consistency": rec["consistency"][i],
                   "important": important[i], "group": group[i], "bleu_overlap": bleu[i]}
            for col, key in (("log_perplexity", "segment_log_perplexity"), ("entropy", "segment_entropy"),
                             ("removal_effect", "removal_effect")):
                if key in rec:
                    row[col] = rec[key][i]
            if "segment_roles" in rec:
                row["role"] = rec["segment_roles"][i]
                row["useful"] = is_useful(rec["segment_roles"][i])
            rows.append(row)
    return pd.DataFrame(rows)


def strength_cdf(records: Iterable[dict]) -> pd.DataFrame:
    """Paper Fig. 1: per trace, segments sorted by strength (strongest first) with the cumulative strength.

    Columns ``trace``, ``rank`` (1 = strongest), ``segment_fraction`` (rank / n_segments) and
    ``cumulative_strength`` (share of the trace's total strength held by the ``rank`` strongest segments).
    """
    rows = []
    for rec in records:
        s = np.sort(np.asarray(rec["strength"], dtype=float))[::-1]
        total = s.sum()
        cum = np.cumsum(s) / total if total > 0 else np.zeros_like(s)
        for k, c in enumerate(cum, 1):
            rows.append({"trace": rec.get("id"), "rank": k, "segment_fraction": k / len(s),
                         "cumulative_strength": float(c)})
    return pd.DataFrame(rows)


def segments_needed(cdf: pd.DataFrame, shares: Sequence[float] = (0.5, 0.7, 0.9)) -> pd.DataFrame:
    """From ``strength_cdf``: per share, the mean (over traces) fraction of segments needed to hold that much
    strength. Columns ``share``, ``segment_fraction`` (mean), ``std``."""
    rows = []
    for share in shares:
        need = cdf[cdf.cumulative_strength >= share - 1e-12].groupby("trace").segment_fraction.min()
        rows.append({"share": share, "segment_fraction": float(need.mean()), "std": float(need.std(ddof=0))})
    return pd.DataFrame(rows)


def bleu_overlap(segments: Sequence[str]) -> list[float]:
    """Per segment, sentence BLEU (sacrebleu, 0..1) of the segment against every earlier segment as references.

    Multi-reference BLEU credits an n-gram found in any earlier segment, so a segment that restates earlier work
    scores high and one that says something new scores low. The first segment has nothing before it: NaN.
    """
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)  # sentence level: short segments would otherwise score 0 on 4-grams
    out = [math.nan]
    for i in range(1, len(segments)):
        earlier = [s for s in segments[:i] if s.strip()]
        hyp = segments[i].strip()
        out.append(bleu.sentence_score(hyp, earlier).score / 100 if earlier and hyp else 0.0)
    return out[:len(segments)]


def completeness_table(records: Iterable[dict]) -> pd.DataFrame:
    """The convergence check: per trace ``completeness_error`` (|sum IG - (F(x) - F(x0))| / |F(x) - F(x0)|),
    ``ig_steps``, ``n_tokens``, ``f_input``, ``f_baseline``, ``attribution_sum`` and ``attribution_seconds``."""
    keys = ("completeness_error", "ig_steps", "n_tokens", "f_input", "f_baseline", "attribution_sum",
            "attribution_seconds")
    return pd.DataFrame([{"trace": r.get("id"), **{k: r.get(k) for k in keys}} for r in records])


# ----------------------------------------------------------------------------------------------------------------
# removing a segment (needs the model)

def answer_log_prob(model, tokenizer, question: str, segments: Sequence[str], answer: str,
                    answer_template: str = P.ANSWER_TEMPLATE) -> float:
    """F, the IG target: summed log-probability of the answer tokens after ``prompt + "".join(segments)``."""
    import torch

    from .attribute import AnswerLogProb, assemble

    a = assemble(tokenizer, question, segments, answer, answer_template)
    ids = a.input_ids.to(model.device)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)[None]  # (1, T, H)
        return float(AnswerLogProb(model, ids, a.targets.to(model.device))(embeds)[0])


def segment_removal_effect(model, tokenizer, record: dict, answer_template: str = P.ANSWER_TEMPLATE) -> list[float]:
    """Per segment i, the change in F when segment i is removed: ``F(segments without i) - F(all segments)``.

    Negative: the model is less sure of the correct answer without the segment (it mattered). NaN where removing
    the segment leaves an empty trace. One forward pass per segment, no gradients.
    """
    segs, q, ans = list(record["segments"]), record["question"], str(record["answer"])
    full = answer_log_prob(model, tokenizer, q, segs, ans, answer_template)
    out = []
    for i in range(len(segs)):
        rest = segs[:i] + segs[i + 1:]
        if not "".join(rest).strip():
            out.append(math.nan)
            continue
        out.append(answer_log_prob(model, tokenizer, q, rest, ans, answer_template) - full)
    return out


def add_removal_effects(model, tokenizer, records: Sequence[dict], progress: bool = True) -> list[dict]:
    """The records with a ``removal_effect`` field (``segment_removal_effect``) added; the inputs are not changed."""
    from tqdm.auto import tqdm

    return [{**r, "removal_effect": segment_removal_effect(model, tokenizer, r)}
            for r in tqdm(records, desc="remove segments", unit="trace", disable=not progress)]


def removal_by_group(table: pd.DataFrame) -> pd.DataFrame:
    """Paper Fig. 2 in numbers: per ``group``, the count and mean/std/median of ``removal_effect``."""
    g = table.dropna(subset=["removal_effect"]).groupby("group").removal_effect
    out = g.agg(["count", "mean", "std", "median"]).reindex([x for x in GROUPS if x in g.groups])
    return out.reset_index()


# ----------------------------------------------------------------------------------------------------------------
# selection quality: the tau x beta grid and the methods compared

def precision_recall(selected: Iterable[bool], useful: Iterable[bool]) -> dict:
    """Precision, recall and F1 of a selection against the planted useful segments (flat lists of booleans).

    An empty selection has precision NaN; no useful segment gives recall NaN; F1 is 0 when either is 0 or NaN.
    """
    sel, use = np.asarray(list(selected), bool), np.asarray(list(useful), bool)
    tp = int((sel & use).sum())
    p = tp / sel.sum() if sel.sum() else math.nan
    r = tp / use.sum() if use.sum() else math.nan
    f1 = 2 * p * r / (p + r) if p > 0 and r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1, "n_selected": int(sel.sum()), "n_useful": int(use.sum())}


def _selection_ratio(records: Sequence[dict], chosen: Sequence[Sequence[int]]) -> tuple[float, float]:
    """Share of segments, and of trace tokens, that ``chosen`` (one list of indices per record) selects."""
    n_seg = sum(len(r["segments"]) for r in records)
    n_tok = sum(len(a) for r in records for a in r["attributions"])
    sel_seg = sum(len(c) for c in chosen)
    sel_tok = sum(len(r["attributions"][i]) for r, c in zip(records, chosen) for i in c)
    return sel_seg / max(n_seg, 1), sel_tok / max(n_tok, 1)


def decided(record: dict, always_keep: Sequence[str] = ALWAYS_KEEP) -> list[int]:
    """Indices of the segments a selection decides on: all but the always-kept ones (first, second-to-last and last
    by default), which ``segkit train`` trains whatever is selected."""
    kept = set(always_kept(len(record["segments"]), always_keep))
    return [i for i in range(len(record["segments"])) if i not in kept]


def grid_table(records: Sequence[dict], taus: Sequence[float], betas: Sequence[float],
               always_keep: Sequence[str] = ALWAYS_KEEP) -> pd.DataFrame:
    """One row per ``(tau, beta)``: ``segment_ratio`` and ``token_ratio`` selected; where records carry
    ``removal_effect``, the paper's criterion ``confidence_gap`` = mean removal effect of unselected segments minus
    that of selected ones (pooled over segments; larger: removing the selected ones costs more confidence); where
    they carry ``segment_roles``, ``precision``, ``recall`` and ``f1`` against the useful roles.

    The gap and the scores cover the segments the selection decides on (``decided``): the always-kept ones are
    trained whatever (tau, beta) is, so they must not steer the choice (the final segment, which states the answer,
    is the strongest and most consistent of a trace and would pull beta to 1)."""
    has_effect = all("removal_effect" in r for r in records)
    has_roles = all("segment_roles" in r for r in records)
    idx = [decided(r, always_keep) for r in records]
    rows = []
    for tau in taus:
        for beta in betas:
            chosen = [select(r["strength"], r["consistency"], tau, beta) for r in records]
            seg_ratio, tok_ratio = _selection_ratio(records, chosen)
            row = {"tau": tau, "beta": beta, "segment_ratio": seg_ratio, "token_ratio": tok_ratio}
            flags = [i in set(c) for c, ii in zip(chosen, idx) for i in ii]
            if has_effect:
                eff = np.array([r["removal_effect"][i] for r, ii in zip(records, idx) for i in ii], float)
                sel, ok = np.array(flags, bool), ~np.isnan(eff)
                row["confidence_gap"] = (float(eff[~sel & ok].mean() - eff[sel & ok].mean())
                                         if (sel & ok).any() and (~sel & ok).any() else math.nan)
            if has_roles:
                useful = [is_useful(r["segment_roles"][i]) for r, ii in zip(records, idx) for i in ii]
                row.update({k: v for k, v in precision_recall(flags, useful).items() if not k.startswith("n_")})
            rows.append(row)
    return pd.DataFrame(rows)


def choose_tau_beta(grid: pd.DataFrame, by: str = "confidence_gap", min_ratio: float = 0.05) -> dict:
    """The grid cell with the largest ``by`` among those selecting at least ``min_ratio`` of the segments
    (a cell that selects almost nothing can have a large gap by chance); ties go to the smaller token ratio.
    Returns ``{"tau", "beta", "by", <that row's values>}``."""
    if by not in grid:
        raise ValueError(f"the grid has no column {by!r}; it has {list(grid.columns)}")
    ok = grid[(grid.segment_ratio >= min_ratio) & grid[by].notna()]
    if ok.empty:
        raise ValueError(f"no grid cell selects at least {min_ratio:.0%} of the segments with a value for {by!r}")
    best = ok.sort_values([by, "token_ratio"], ascending=[False, True]).iloc[0]
    return {"tau": float(best.tau), "beta": float(best.beta), "by": by,
            **{k: float(v) for k, v in best.items() if k not in ("tau", "beta")}}


def save_choice(choice: dict, path) -> Path:
    """Write the chosen ``(tau, beta)`` (and whatever else ``choice`` holds) as JSON for the next notebook."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(choice, indent=2) + "\n")
    return path


def load_choice(path, default: tuple[float, float] = (TAU, BETA)) -> dict:
    """The choice written by ``save_choice``; the paper's ``(tau, beta)`` if the file does not exist (notebook 03
    run on its own)."""
    path = Path(path)
    if not path.exists():
        return {"tau": default[0], "beta": default[1], "by": "paper default (no choice file found)"}
    return json.loads(path.read_text())


def precision_recall_by_method(records: Sequence[dict], methods: Sequence[str] = METHODS, tau: float = TAU,
                               beta: float = BETA, seeds: Sequence[int] = (0,),
                               always_keep: Sequence[str] = ALWAYS_KEEP) -> pd.DataFrame:
    """Precision, recall and F1 of each selection method against the planted useful roles, one row per
    ``(method, seed)`` (the seed matters for ``random`` only), over the segments a selection decides on
    (``decided``: the always-kept ones are left out). Methods are ``segkit train`` modes: the segments a mode trains
    (before the always-kept ones are added) are its selection; ``selective`` is the IG rule at ``(tau, beta)``, and
    ``random``/``perplexity``/``entropy`` take as many segments per trace as it does."""
    from .train import segments_for_mode

    recs = [{**r, "selected_spans_ids": select(r["strength"], r["consistency"], tau, beta)} for r in records]
    idx = [decided(r, always_keep) for r in recs]
    useful = [is_useful(r["segment_roles"][i]) for r, ii in zip(recs, idx) for i in ii]
    rows = []
    for method in methods:
        for seed in (seeds if method == "random" else seeds[:1]):
            flags = []
            for r, ii in zip(recs, idx):
                chosen = set(segments_for_mode(r, method, seed=seed, tau=tau))
                flags += [i in chosen for i in ii]
            rows.append({"method": method, "seed": seed, **precision_recall(flags, useful),
                         "segment_ratio": fmean(flags) if flags else math.nan})
    return pd.DataFrame(rows)


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


# ----------------------------------------------------------------------------------------------------------------
# the token heat map

def _colour(score: float, scale: float) -> str:
    """Red for positive IG, blue for negative, opacity by size relative to ``scale``."""
    a = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    rgb = "214, 39, 40" if score >= 0 else "31, 119, 180"
    return f"rgba({rgb}, {a:.3f})"


def render_heatmap(record: dict, tau: float | None = None, beta: float | None = None, title: str | None = None,
                   scale_quantile: float = 0.95) -> str:
    """An inseq-like HTML view of one attributed trace: every trace token on a background coloured by its IG score
    (red positive, blue negative; full colour at the ``scale_quantile`` quantile of |score|, so that one outlier
    token does not wash out the rest; the score shows on hover), each segment opened by a label with its index,
    strength, consistency, role (testbed) and whether it is selected.

    ``tau``/``beta`` default to the record's own (from ``select``), else the paper's. Returns a self-contained
    ``<div>``; in a notebook show it with ``IPython.display.HTML``.
    """
    tau = record.get("tau", TAU) if tau is None else tau
    beta = record.get("beta", BETA) if beta is None else beta
    chosen = set(select(record["strength"], record["consistency"], tau, beta))
    magnitudes = np.abs([x for seg in record["attributions"] for x in seg])
    scale = float(np.quantile(magnitudes, scale_quantile)) if magnitudes.size else 0.0
    roles = record.get("segment_roles")
    esc = _html.escape
    parts = [f"<div class='segkit-heatmap' style='font-family: monospace; font-size: 13px; line-height: 1.9; "
             f"white-space: pre-wrap; border: 1px solid #ccc; padding: 8px'>"]
    head = title or f"trace {record.get('id', '')}"
    parts.append(f"<div style='font-family: sans-serif; margin-bottom: 6px'><b>{esc(str(head))}</b> &middot; "
                 f"answer {esc(str(record.get('answer', '')))} &middot; tau={tau:g}, beta={beta:g} &middot; "
                 f"<span style='background: {_colour(1, 1)}'>&nbsp;positive IG&nbsp;</span> "
                 f"<span style='background: {_colour(-1, 1)}'>&nbsp;negative IG&nbsp;</span> &middot; "
                 f"<span style='border-left: 3px solid #2ca02c'>&nbsp;selected segment</span> &middot; "
                 f"&#8629; newline</div>")
    for i, (pieces, scores) in enumerate(zip(record["tokens"], record["attributions"])):
        sel = i in chosen
        label = f"[{i}{' ' + roles[i] if roles else ''} s={record['strength'][i]:.2f} c={record['consistency'][i]:.2f}"
        label += " selected]" if sel else "]"
        # one block per segment, opened by its label; newlines show as a visible mark (they carry attribution
        # too), and break the line only inside a segment
        parts.append(f"<div style='border-left: 3px solid {'#2ca02c' if sel else '#bbb'}; padding-left: 6px; "
                     f"margin: 3px 0'><span style='font-family: sans-serif; font-size: 10px; "
                     f"color: {'#2ca02c' if sel else '#666'}; font-weight: {'bold' if sel else 'normal'}'>"
                     f"{esc(label)}</span> ")
        started = False
        for piece, score in zip(pieces, scores):
            text = esc(piece).replace("\n", "&#8629;\n" if started else "&#8629;")
            started = started or bool(piece.strip())
            parts.append(f"<span title='{score:+.4f}' style='background: {_colour(score, scale)}'>{text}</span>")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# figures (each returns a matplotlib Figure)

def _style():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def _hue(table: pd.DataFrame) -> tuple[str | None, list | None]:
    if "role" in table:
        return "role", [r for r in ROLE_ORDER if r in set(table.role)]
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

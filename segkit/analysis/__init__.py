"""Analysis of attributed traces and of the training modes: the tables behind the notebooks, and the figures.

One module per job; every name is importable from ``segkit.analysis`` as the notebooks use it:

- ``tables``: one row per segment, the strength CDF (paper Fig. 1), BLEU overlap, the convergence table
- ``removal``: the change in log p(answer) when a segment is removed (paper Fig. 2; needs the model)
- ``selection``: precision/recall against planted roles, the tau x beta grid and its saved choice, methods compared
- ``auc``: ROC-AUC with bootstrap intervals of every segment score against the planted useful roles
- ``modes``: per-problem results, mode rows with intervals, paired differences, base-model intervals and the
  verdict lines
- ``heatmap``: the token heat map (HTML); ``plots``: the figures (matplotlib)
- ``explore``: the heat map with tau/beta sliders and a trace picker (ipywidgets, for JupyterLab)

Every function takes records as written by the pipeline (``segments``, ``attributions``, ``strength``, ...;
``segment_roles`` on the planted-role testbed) and returns plain values, a pandas DataFrame, HTML or a Figure.

    >>> table = segment_table(records, tau=0.7, beta=0.8)     # one row per segment
    >>> plot_strength_cdf(strength_cdf(records))               # paper Fig. 1
    >>> auc_table(records, variant="answer restated")          # what IG sees, threshold-free
"""
from .auc import (SEGMENT_SCORES, auc_summary, auc_table, describe_versus, versus_model_free, with_random_weights,
                  within_trace_auc)
from .explore import explore, selection_summary
from .heatmap import render_heatmap
from .modes import (EQUIVALENCE, METRICS, PAIRS, RECOVERED, VERSUS, describe_guesses, differences_table,
                    family_table, finetuning_headline, guesses, intervals_sentence, modes_table, per_problem_results,
                    per_problem_rows, recovered, resolution, summarise_modes, verdict)
from .plots import (plot_auc, plot_completeness, plot_differences, plot_forest, plot_grid, plot_joint,
                    plot_length_vs_share, plot_modes, plot_precision_recall, plot_removal_effect, plot_segment_features,
                    plot_strength_cdf, plot_strength_consistency)
from .removal import add_removal_effects, answer_log_prob, fig2_ordering, removal_by_group, segment_removal_effect
from .selection import (SELECTION_METHODS, choose_tau_beta, choose_tau_beta_on_signal, confidence_gap_spread,
                        criterion_support, grid_table, load_choice, precision_recall, precision_recall_by_method,
                        save_choice, selectable_segments)
from .tables import (GROUPS, bleu_overlap, completeness_table, importance_labels, segment_table, segments_needed,
                     strength_cdf, strength_group)
from ..roles import ROLES, USEFUL, is_useful

__all__ = [name for name in dir() if not name.startswith("_") and name not in
           ("auc", "heatmap", "modes", "plots", "removal", "selection", "tables")]

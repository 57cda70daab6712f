"""Evaluations of masking strategies: segment removal, shape leakage, LIME, the paper report.

Each evaluation is a function ``evaluation(model, data, strategies, ...)`` returning an
:class:`EvaluationResult` (tidy tables that serialise to JSON). The same runs are
available as ``maskbench run NAME`` (see ``docs/experiments.md``)::

    from maskbench import load_model
    from maskbench.experiments import load_benchmark, segment_removal, write_result

    model = load_model("shapes_resnet")
    data = load_benchmark(40)
    result = segment_removal(model, data, ["black", "grey", "layer_masking"])
    write_result(result, "out/")
"""

from maskbench.experiments.data import DataError, EvalData, load_benchmark, load_folder
from maskbench.experiments.findings import Finding, all_findings
from maskbench.experiments.lime import explain, lime_evaluation
from maskbench.experiments.metrics import (
    accuracy,
    kl_drift,
    prediction_entropy,
    unchanged_fraction,
)
from maskbench.experiments.report import (
    FULL_SIZES,
    QUICK_SIZES,
    PaperSizes,
    paper_report,
    write_result,
)
from maskbench.experiments.results import EvaluationResult
from maskbench.experiments.segment_removal import segment_removal
from maskbench.experiments.shape_leakage import shape_leakage, shifted_mask
from maskbench.experiments.stats import Bootstrap
from maskbench.experiments.strategy_set import (
    PAPER_STRATEGIES,
    MissingStrategiesError,
    resolve_strategies,
)

__all__ = [
    "FULL_SIZES",
    "PAPER_STRATEGIES",
    "QUICK_SIZES",
    "Bootstrap",
    "DataError",
    "EvalData",
    "EvaluationResult",
    "Finding",
    "MissingStrategiesError",
    "PaperSizes",
    "accuracy",
    "all_findings",
    "explain",
    "kl_drift",
    "lime_evaluation",
    "load_benchmark",
    "load_folder",
    "paper_report",
    "prediction_entropy",
    "resolve_strategies",
    "segment_removal",
    "shape_leakage",
    "shifted_mask",
    "unchanged_fraction",
    "write_result",
]

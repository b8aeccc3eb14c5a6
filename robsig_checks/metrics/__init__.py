"""Robustness-signature metrics of Crabbé et al. (2023): activation kurtosis, privileged
directions of the linear head, and tolerance to pruning its singular directions.

Each metric has a function form for in-memory activations and a streaming
:class:`~robsig_checks.metrics.base.Accumulator` that folds batches and merges shards.
Inputs are torch tensors or numpy arrays of any float dtype, computed in float64. Results are
frozen dataclasses whose ``to_dict()`` returns JSON-serialisable values.
"""

from robsig_checks.metrics.average_precision import average_precision
from robsig_checks.metrics.base import Accumulator
from robsig_checks.metrics.cka import CKAAccumulator, CKAResult, MinibatchCKAAccumulator, linear_cka, minibatch_cka
from robsig_checks.metrics.effective_robustness import (
    AccuracyAccumulator,
    AccuracyResult,
    LineFit,
    effective_robustness,
    fit_baseline_line,
    grouped_accuracy,
)
from robsig_checks.metrics.importance import (
    HeadSVD,
    ImportanceAccumulator,
    ImportanceResult,
    head_svd,
    importance,
    importance_tail,
)
from robsig_checks.metrics.kurtosis import KurtosisAccumulator, KurtosisResult, kurtosis, row_kurtosis
from robsig_checks.metrics.pruning import (
    DEFAULT_FRACTIONS,
    ORDERS,
    PruningAccumulator,
    PruningCurve,
    PruningPoint,
    pruning_curve,
)

__all__ = [
    "Accumulator",
    "AccuracyAccumulator",
    "AccuracyResult",
    "LineFit",
    "effective_robustness",
    "fit_baseline_line",
    "grouped_accuracy",
    "average_precision",
    "CKAAccumulator",
    "CKAResult",
    "MinibatchCKAAccumulator",
    "linear_cka",
    "minibatch_cka",
    "DEFAULT_FRACTIONS",
    "HeadSVD",
    "ImportanceAccumulator",
    "ImportanceResult",
    "KurtosisAccumulator",
    "KurtosisResult",
    "ORDERS",
    "PruningAccumulator",
    "PruningCurve",
    "PruningPoint",
    "head_svd",
    "importance",
    "importance_tail",
    "kurtosis",
    "pruning_curve",
    "row_kurtosis",
]

"""Evaluation figures for each stage, as pure functions over plain arrays.

Written out so the numbers in status and Grafana can be recomputed by anyone from the
predictions the trainer saves (the tests check them against scikit-learn).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(
    labels: Sequence[int], predictions: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, per-class figures and the confusion matrix.

    Macro averages run over every class that occurs in the truth OR in the predictions,
    as scikit-learn's ``precision_recall_fscore_support(average="macro", zero_division=0)``
    does: a class that is predicted but never true counts, with recall 0 and precision 0.
    A class never predicted has precision 0, one never true has recall 0.
    """
    truth = np.asarray(labels, dtype=int)
    guess = np.asarray(predictions, dtype=int)
    classes = len(names)
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (truth, guess), 1)
    true_positive = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    actual = confusion.sum(axis=1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros(classes), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(classes), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(classes), where=denominator > 0
    )
    seen = (actual > 0) | (predicted > 0)
    return {
        "accuracy": float(true_positive.sum() / max(1, len(truth))),
        "precision_macro": _mean_over(precision, seen),
        "recall_macro": _mean_over(recall, seen),
        "f1_macro": _mean_over(f1, seen),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion.tolist(),
    }


def _mean_over(values: Any, mask: Any) -> float:
    return float(values[mask].mean()) if mask.any() else 0.0


def pairwise_metrics(
    chosen_scores: Sequence[float], rejected_scores: Sequence[float]
) -> dict[str, float]:
    """How often the reward model ranks the preferred response higher, and by how much."""
    chosen = np.asarray(chosen_scores, dtype=float)
    rejected = np.asarray(rejected_scores, dtype=float)
    margin = chosen - rejected
    return {
        "accuracy": float((margin > 0).mean()) if len(margin) else 0.0,
        "mean_margin": float(margin.mean()) if len(margin) else 0.0,
        "mean_chosen_score": float(chosen.mean()) if len(chosen) else 0.0,
        "mean_rejected_score": float(rejected.mean()) if len(rejected) else 0.0,
    }


def win_rate_figures(
    policy_scores: Sequence[float], reference_scores: Sequence[float]
) -> dict[str, float]:
    """A judge's mean score of the policy's and the reference's answers to the same
    prompts, and how often the policy's scored higher (ties count half)."""
    policy = np.asarray(policy_scores, dtype=float)
    reference = np.asarray(reference_scores, dtype=float)
    if not len(policy):
        return {}
    wins = (policy > reference) + 0.5 * (policy == reference)
    return {
        "eval/reward_policy": float(policy.mean()),
        "eval/reward_reference": float(reference.mean()),
        "eval/win_rate": float(wins.mean()),
    }


def regression_metrics(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """MSE, Pearson and Spearman correlation of rating predictions."""
    truth = np.asarray(targets, dtype=float)
    guess = np.asarray(predictions, dtype=float)
    return {
        "mse": float(((truth - guess) ** 2).mean()),
        "pearson": pearson(truth, guess),
        "spearman": pearson(_ranks(truth), _ranks(guess)),
    }


def pearson(first: Any, second: Any) -> float:
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if len(first) < 2 or first.std() == 0 or second.std() == 0:
        return 0.0
    return float(np.corrcoef(first, second)[0, 1])


def _ranks(values: Any) -> Any:
    """Ranks with ties sharing their average rank (as Spearman's definition needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def perplexity(loss: float) -> float:
    """exp(cross-entropy), capped so a diverged run does not overflow."""
    return float(math.exp(min(loss, 50.0)))

"""Final figures on held-out test data (dataset.testSplit / testFraction).

The test data never reaches a Trainer before training ends: it is not its eval_dataset,
so periodic evaluation, early stopping and the choice of the best checkpoint cannot see
it. It is evaluated once, after training, and its figures are named ``test_*`` so they
are reported apart from the ``eval_*`` figures that steered training.
"""

from __future__ import annotations

from typing import Any

TEST_PREFIX = "test"
TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def as_test_figures(figures: dict[str, Any]) -> dict[str, float]:
    """``test_``-prefixed numeric figures, without timings (they differ between runs)."""
    prefix = f"{TEST_PREFIX}_"
    return {
        (name if name.startswith(prefix) else prefix + name): float(value)
        for name, value in figures.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not name.endswith(TIMING_SUFFIXES)
        and name != "epoch"
    }


def evaluate_held_out(trainer: Any, dataset: Any) -> dict[str, float]:
    """Evaluate a finished transformers/TRL trainer once on the test data.

    TRL's SFTTrainer and RewardTrainer prepare (tokenize) a dataset handed to evaluate()
    the way they prepared the training data; for a plain Trainer pass it tokenized.
    """
    return as_test_figures(trainer.evaluate(eval_dataset=dataset, metric_key_prefix=TEST_PREFIX))

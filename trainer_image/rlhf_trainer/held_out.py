"""Final figures on held-out test data (dataset.testSplit / testFraction).

The test data never reaches a Trainer before training ends: it is not its eval_dataset,
so periodic evaluation, early stopping and the choice of the best checkpoint cannot see
it. It is evaluated once, after training, and its figures are named ``test_*`` so they
are reported apart from the ``eval_*`` figures that steered training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

TEST_PREFIX = "test"
NOT_TEST_FIGURES = ("_runtime", "_samples_per_second", "_steps_per_second", "num_tokens")
"""Timings (they differ between runs) and TRL's count of tokens trained on so far."""


def as_test_figures(figures: dict[str, Any]) -> dict[str, float]:
    """Numeric figures named ``test_<name>``, without timings and token counts.

    TRL's trainers name their own evaluation figures ``eval_<name>`` whatever prefix
    evaluate() was given (RewardTrainer's accuracy and margin, SFTTrainer's token
    accuracy): those are test figures here, and are renamed so.
    """
    renamed = {}
    for name, value in figures.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if name.endswith(NOT_TEST_FIGURES) or name == "epoch":
            continue
        for prefix in (f"{TEST_PREFIX}_", "eval_"):
            name = name.removeprefix(prefix)
        renamed[f"{TEST_PREFIX}_{name}"] = float(value)
    return renamed


def evaluate_held_out(trainer: Any, dataset: Any) -> dict[str, float]:
    """Evaluate a finished transformers/TRL trainer once on the test data.

    TRL's SFTTrainer and RewardTrainer prepare (tokenize) a dataset handed to evaluate()
    the way they prepared the training data; for a plain Trainer pass it tokenized.
    The figures the trainer logs on the way (to telemetry: history, gauges) are renamed
    test_* too, so test figures never show up as evaluation figures.
    """
    with _logged_as_test_figures(trainer):
        figures = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=TEST_PREFIX)
    return as_test_figures(figures)


@contextlib.contextmanager
def _logged_as_test_figures(trainer: Any) -> Iterator[None]:
    handler = trainer.callback_handler
    original = handler.on_log

    def on_log(args: Any, state: Any, control: Any, logs: dict[str, Any]) -> Any:
        return original(args, state, control, as_test_figures(logs))

    handler.on_log = on_log
    try:
        yield
    finally:
        del handler.on_log  # the class's method again

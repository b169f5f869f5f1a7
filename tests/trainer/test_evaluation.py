"""Evaluation figures: the classification report equals scikit-learn's for any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rlhf_trainer.evaluation import classification_metrics
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@st.composite
def labelled_predictions(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    """A label count, then truth and predictions drawn from it: some classes absent from
    the truth, the predictions, or both (the cases the macro averages get wrong)."""
    classes = draw(st.integers(min_value=2, max_value=7))
    size = draw(st.integers(min_value=1, max_value=40))
    truth_classes = draw(st.lists(st.integers(0, classes - 1), min_size=1, unique=True))
    guess_classes = draw(st.lists(st.integers(0, classes - 1), min_size=1, unique=True))
    truth = draw(st.lists(st.sampled_from(truth_classes), min_size=size, max_size=size))
    guess = draw(st.lists(st.sampled_from(guess_classes), min_size=size, max_size=size))
    return truth, guess, classes


@settings(max_examples=300, deadline=None)
@given(labelled_predictions())
def test_macro_and_per_class_figures_equal_scikit_learn(case) -> None:
    truth, guess, classes = case
    names = [f"class{i}" for i in range(classes)]
    ours = classification_metrics(truth, guess, names)

    macro = precision_recall_fscore_support(truth, guess, average="macro", zero_division=0)
    assert ours["precision_macro"] == pytest.approx(macro[0], abs=1e-12)
    assert ours["recall_macro"] == pytest.approx(macro[1], abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(macro[2], abs=1e-12)
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, guess), abs=1e-12)

    everything = list(range(classes))
    per_class = precision_recall_fscore_support(
        truth, guess, labels=everything, average=None, zero_division=0
    )
    for index, name in enumerate(names):
        figures = ours["per_class"][name]
        assert figures["precision"] == pytest.approx(per_class[0][index], abs=1e-12)
        assert figures["recall"] == pytest.approx(per_class[1][index], abs=1e-12)
        assert figures["f1"] == pytest.approx(per_class[2][index], abs=1e-12)
        assert figures["support"] == per_class[3][index]
    expected = confusion_matrix(truth, guess, labels=everything)
    assert np.array_equal(ours["confusion_matrix"], expected)


def test_a_class_predicted_but_never_true_lowers_the_macro_average() -> None:
    # Truth has only class 0; half the predictions say class 1. scikit-learn averages over
    # both classes: precision (1 + 0) / 2, recall (0.5 + 0) / 2.
    figures = classification_metrics([0, 0, 0, 0], [0, 0, 1, 1], ["a", "b", "c"])
    assert figures["precision_macro"] == 0.5
    assert figures["recall_macro"] == 0.25
    assert figures["f1_macro"] == pytest.approx((2 * 1 * 0.5 / 1.5) / 2)
    assert figures["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}

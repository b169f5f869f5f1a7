"""Evaluation figures: the classification report equals scikit-learn's for any input;
held-out test data is a seeded part of the data, disjoint from training and evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rlhf_operator.api.trainer_config import TrainerConfig
from rlhf_trainer.data import load_splits
from rlhf_trainer.errors import DataError
from rlhf_trainer.evaluation import classification_metrics
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tests.trainer.conftest import CPU, job_manifest


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


# --- held-out test data ---------------------------------------------------------------


def _config(tmp_path, dataset: dict, rows: list[dict]) -> TrainerConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = {
        **CPU,
        "task": "sequence-classification",
        "labels": ["negative", "positive"],
        "model": {"preset": "tiny"},
        "dataset": {"pvc": {"claimName": "data", "path": "train.jsonl"}, **dataset},
    }
    return TrainerConfig.model_validate(
        {
            "job": job_manifest("SFTJob", "split", spec),
            "paths": {
                "output": str(tmp_path / "out"),
                "inputs": {"dataset": str(data / "train.jsonl")},
            },
        }
    )


ROWS = [{"text": f"review {i}", "label": "positive" if i % 3 else "negative"} for i in range(50)]


def test_test_and_eval_fractions_are_seeded_disjoint_parts_of_the_data(tmp_path) -> None:
    config = _config(tmp_path, {"testFraction": 0.2, "evalFraction": 0.1}, ROWS)
    splits = load_splits(config.job.spec.dataset, "sft", config, seed=1)
    train, evaluation, test = (
        set(part["text"]) for part in (splits.train, splits.eval, splits.test)
    )
    assert (len(train), len(evaluation), len(test)) == (35, 5, 10)
    assert not train & evaluation and not train & test and not evaluation & test
    assert train | evaluation | test == {row["text"] for row in ROWS}
    again = load_splits(config.job.spec.dataset, "sft", config, seed=1)
    assert again.test["text"] == splits.test["text"] and again.eval["text"] == splits.eval["text"]
    other = load_splits(config.job.spec.dataset, "sft", config, seed=2)
    assert set(other.test["text"]) != test


def test_test_split_is_a_file_next_to_the_training_data(tmp_path) -> None:
    config = _config(tmp_path, {"testSplit": "test.jsonl", "evalFraction": 0.2}, ROWS)
    rows = [{"text": "held out", "label": "negative"}] * 3
    (tmp_path / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = load_splits(config.job.spec.dataset, "sft", config, seed=1)
    assert splits.test["text"] == ["held out"] * 3
    assert len(splits.train) == 40 and len(splits.eval) == 10


def test_too_little_data_for_a_test_fraction_is_a_data_error(tmp_path) -> None:
    config = _config(tmp_path, {"testFraction": 0.5}, ROWS[:1])
    with pytest.raises(DataError, match=r"too few rows .* as test data"):
        load_splits(config.job.spec.dataset, "sft", config, seed=1)


def test_held_out_figures_of_a_reward_trainer_are_test_prefixed_without_timings(
    preset_cache, tmp_path
) -> None:
    """What the reward stage calls for its test data: TRL's RewardTrainer prepares the raw
    preference rows itself and reports test_* figures once."""
    import datasets
    from rlhf_trainer.held_out import evaluate_held_out
    from rlhf_trainer.presets import tiny_model_path, tiny_records
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    path = tiny_model_path(str(preset_cache))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = tiny_records("rm", "preference", 40, 0)
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            report_to="none",
            use_cpu=True,
            max_length=64,
        ),
        train_dataset=datasets.Dataset.from_list(rows[:32]),
        processing_class=tokenizer,
    )
    trainer.train()
    logged: list[dict] = []
    trainer.add_callback(type("Spy", (TrainerCallback,), {"on_log": _spy(logged)}))
    figures = evaluate_held_out(trainer, datasets.Dataset.from_list(rows[32:]))
    assert {"test_loss", "test_accuracy", "test_margin"} <= figures.keys()
    assert all(name.startswith("test_") and "eval" not in name for name in figures)
    assert not any(name.endswith("_per_second") or name.endswith("_runtime") for name in figures)
    # What the trainer logged on the way (telemetry's history) is named test_* as well.
    assert logged and all(name.startswith("test_") for row in logged for name in row)


def _spy(logged: list[dict]):  # type: ignore[no-untyped-def]
    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        logged.append(dict(logs or {}))

    return on_log

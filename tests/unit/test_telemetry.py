"""The trainer's telemetry: Prometheus text, /progress, termination message, metrics math."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rlhf_trainer.evaluation import classification_metrics, pairwise_metrics, regression_metrics
from rlhf_trainer.telemetry import Telemetry, write_summary, write_termination_message


@pytest.fixture
def telemetry():  # type: ignore[no-untyped-def]
    serving = Telemetry("team", "demo", "PPOJob")
    serving.start("127.0.0.1", 0)
    yield serving
    serving.stop()


def _get(address: str, path: str) -> str:
    with urllib.request.urlopen(address + path, timeout=5) as reply:
        return reply.read().decode()


def test_metrics_and_progress_are_served_with_job_labels(telemetry) -> None:
    telemetry.set_total(40)
    for step in (1, 2, 3, 4):
        telemetry.record_step(step, epoch=step / 40)
        time.sleep(0.01)
    telemetry.record_metrics(
        {
            "objective/scores": 1.5,
            "objective/kl": 0.2,
            "loss": 0.7,
            "eval_accuracy": 0.9,
            "test_f1_macro": 0.8,
            "bad": "x",
        }
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(_get(telemetry.address, "/metrics"))
        for sample in family.samples
    }
    labels = (("job", "demo"), ("kind", "PPOJob"), ("namespace", "team"))
    assert samples[("rlhf_training_step", labels)] == 4
    assert samples[("rlhf_training_total_steps", labels)] == 40
    assert samples[("rlhf_training_progress_ratio", labels)] == pytest.approx(0.1)
    assert samples[("rlhf_training_steps_total", labels)] == 4
    assert samples[("rlhf_ppo_score", labels)] == 1.5
    assert samples[("rlhf_ppo_kl", labels)] == 0.2
    assert samples[("rlhf_training_loss", labels)] == 0.7
    assert samples[("rlhf_eval_metric", tuple(sorted((*labels, ("metric", "accuracy")))))] == 0.9
    assert samples[("rlhf_test_metric", tuple(sorted((*labels, ("metric", "f1_macro")))))] == 0.8
    assert not any(
        name == "rlhf_train_metric" and dict(lbl).get("metric") == "bad" for name, lbl in samples
    )

    progress = json.loads(_get(telemetry.address, "/progress"))
    assert progress["progress"]["step"] == 4 and progress["progress"]["totalSteps"] == 40
    assert progress["progress"]["percent"] == 10
    assert progress["progress"]["estimatedRemainingSeconds"] >= 0
    assert progress["metrics"]["objective/scores"] == 1.5


def test_termination_message_fits_in_four_kilobytes(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    metrics = {f"figure_{index:04d}": float(index) for index in range(1000)}
    write_termination_message(
        str(path), {"phase": "Succeeded", "keyMetric": "x=1", "metrics": metrics}
    )
    written = json.loads(path.read_text())
    assert len(path.read_bytes()) <= 4000
    assert written["phase"] == "Succeeded" and 0 < len(written["metrics"]) < 1000
    write_summary(
        tmp_path, {"phase": "Succeeded", "metrics": {"a": 1.0}}, [{"step": 1, "a": 1.0}], None
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["history"] == [{"step": 1, "a": 1.0}]


def test_classification_metrics_match_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    truth = [0, 1, 2, 2, 1, 0, 2, 1, 1, 0]
    guess = [0, 2, 2, 2, 1, 0, 1, 1, 0, 0]
    figures = classification_metrics(truth, guess, ["a", "b", "c"])
    assert figures["accuracy"] == sklearn.accuracy_score(truth, guess)
    assert figures["f1_macro"] == pytest.approx(sklearn.f1_score(truth, guess, average="macro"))
    assert figures["precision_macro"] == pytest.approx(
        sklearn.precision_score(truth, guess, average="macro")
    )
    assert figures["recall_macro"] == pytest.approx(
        sklearn.recall_score(truth, guess, average="macro")
    )
    assert figures["confusion_matrix"] == sklearn.confusion_matrix(truth, guess).tolist()


def test_pairwise_and_rating_metrics() -> None:
    scipy = pytest.importorskip("scipy.stats")
    pairs = pairwise_metrics([2.0, 1.0, 0.5], [1.0, 2.0, 0.0])
    assert pairs["accuracy"] == pytest.approx(2 / 3) and pairs["mean_margin"] == pytest.approx(
        0.5 / 3
    )
    truth, guess = [1.0, 2.0, 2.0, 5.0, 4.0], [1.5, 1.9, 2.5, 4.0, 4.5]
    figures = regression_metrics(truth, guess)
    assert figures["spearman"] == pytest.approx(scipy.spearmanr(truth, guess).statistic)
    assert figures["pearson"] == pytest.approx(scipy.pearsonr(truth, guess).statistic)

"""The trainer's telemetry: Prometheus text, /progress, termination message, metrics math."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rlhf_trainer.evaluation import classification_metrics, pairwise_metrics, regression_metrics
from rlhf_trainer.telemetry import Telemetry, write_summary, write_termination_message


@pytest.fixture
def telemetry():  # type: ignore[no-untyped-def]
    serving = Telemetry("team", "demo", "PPOJob", stage="ppo")
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
    labels = (("kind", "PPOJob"), ("rlhf_job", "demo"), ("rlhf_namespace", "team"))
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


def _samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
        for sample in family.samples
    }


def test_series_labels_never_collide_with_prometheus_target_labels() -> None:
    """Prometheus gives every target `job` and `instance`, and Kubernetes recipes add
    `namespace`, `pod`, `container`, `node`, `service`, `endpoint`: a scraped label of the
    same name is renamed exported_* unless the scrape honours labels."""
    telemetry = Telemetry("team", "demo", "SFTJob", stage="sft", serve=False)
    telemetry.start_counting(0, 0.0, 0.0, 0.0)
    telemetry.set_total(10)
    telemetry.record_step(1, epoch=0.1)
    telemetry.record_throughput(10.0, 8.0)
    telemetry.record_episodes(4.0)
    telemetry.record_metrics({"loss": 1.0, "entropy": 2.0, "eval_loss": 0.5})
    target_labels = {"job", "instance", "namespace", "pod", "container", "node", "service"}
    used = {label for _, labels in _samples(telemetry) for label, _ in labels}
    assert used == {"rlhf_namespace", "rlhf_job", "kind", "metric", "stage"}
    assert not used & target_labels


def test_trainer_info_carries_the_stage() -> None:
    samples = _samples(Telemetry("team", "demo", "RewardModelJob", stage="rm", serve=False))
    info = [dict(labels) for name, labels in samples if name == "rlhf_trainer_info"]
    assert info == [
        {"rlhf_namespace": "team", "rlhf_job": "demo", "kind": "RewardModelJob", "stage": "rm"}
    ]


def test_counters_follow_the_running_totals_the_rates_come_from() -> None:
    """A resumed run starts counting at its resumed totals; each logging window adds what
    the totals grew by, and its rate is that growth over the window's time."""
    telemetry = Telemetry("team", "demo", "SFTJob", stage="sft", serve=False)
    before_start = time.monotonic()
    telemetry.start_counting(300, tokens_seen=0.0, samples_seen=2400.0)  # resumed at step 300
    after_start = time.monotonic()
    telemetry.record_step(300)
    time.sleep(0.05)
    telemetry.record_step(310)
    before_log = time.monotonic()
    first = telemetry.record_throughput(5000.0, 2480.0)
    after_log = time.monotonic()
    time.sleep(0.05)
    telemetry.record_step(320)
    second = telemetry.record_throughput(10000.0, 2560.0)
    # The end-of-training summary log: no step taken, so no (zero) rate either.
    assert telemetry.record_throughput(None, 2560.0) == {}

    labels = (("kind", "SFTJob"), ("rlhf_job", "demo"), ("rlhf_namespace", "team"))
    samples = _samples(telemetry)
    assert samples[("rlhf_training_steps_total", labels)] == 20
    assert samples[("rlhf_training_tokens_total", labels)] == 10000
    assert samples[("rlhf_training_samples_total", labels)] == 160
    assert ("rlhf_ppo_episodes_total", labels) not in samples
    longest, shortest = after_log - before_start, before_log - after_start
    assert 5000 / longest <= first["tokens_per_second"] <= 5000 / shortest
    assert first["samples_per_second"] == pytest.approx(first["tokens_per_second"] * 80 / 5000)
    assert 0 < second["tokens_per_second"] <= 5000 / 0.05

    ppo = Telemetry("team", "tune", "PPOJob", stage="ppo", serve=False)
    ppo.start_counting(4, episodes_seen=256.0)  # resumed after 4 updates of 64 episodes
    for update in (5, 6, 7):
        ppo.record_step(update)
        ppo.record_episodes(64.0 * update)
    ppo_labels = (("kind", "PPOJob"), ("rlhf_job", "tune"), ("rlhf_namespace", "team"))
    assert _samples(ppo)[("rlhf_ppo_episodes_total", ppo_labels)] == 192
    assert _samples(ppo)[("rlhf_training_steps_total", ppo_labels)] == 3


def test_a_figure_with_its_own_series_is_not_repeated_in_rlhf_train_metric() -> None:
    telemetry = Telemetry("team", "tune", "PPOJob", stage="ppo", serve=False)
    telemetry.record_metrics(
        {
            "loss": 0.3,
            "grad_norm": 1.5,
            "lr": 1e-4,
            "objective/kl": 0.2,
            "episode": 64.0,
            "eps": 12.0,
            "samples_per_second": 12.0,
            "policy/approxkl_avg": 0.01,
        }
    )
    labels = (("kind", "PPOJob"), ("rlhf_job", "tune"), ("rlhf_namespace", "team"))
    samples = _samples(telemetry)
    # PPO's loss and gradient norm land in the training series the dashboard plots.
    assert samples[("rlhf_training_loss", labels)] == 0.3
    assert samples[("rlhf_training_gradient_norm", labels)] == 1.5
    assert samples[("rlhf_training_learning_rate", labels)] == 1e-4
    assert samples[("rlhf_ppo_kl", labels)] == 0.2
    assert samples[("rlhf_training_samples_per_second", labels)] == 12.0
    catch_all = {dict(lbl)["metric"] for name, lbl in samples if name == "rlhf_train_metric"}
    assert catch_all == {"policy/approxkl_avg"}
    # /progress and the history (the report) still have every figure.
    assert telemetry.metrics["episode"] == 64.0 and telemetry.history[-1]["loss"] == 0.3


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


def test_dpo_figures_have_their_series() -> None:
    dpo = Telemetry("team", "align", "DPOJob", stage="dpo", serve=False)
    dpo.record_metrics(
        {
            "rewards/accuracies": 0.75,
            "rewards/margins": 0.5,
            "eval_rewards/accuracies": 0.875,
            "test_rewards/margins": 0.25,
            "eval/win_rate": 0.9,
        }
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(dpo.registry).decode())
        for sample in family.samples
    }
    labels = (("kind", "DPOJob"), ("rlhf_job", "align"), ("rlhf_namespace", "team"))

    def tagged(metric: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((*labels, ("metric", metric))))

    assert samples[("rlhf_dpo_reward_accuracy", labels)] == 0.75
    assert samples[("rlhf_dpo_reward_margin", labels)] == 0.5
    assert samples[("rlhf_eval_metric", tagged("rewards/accuracies"))] == 0.875
    assert samples[("rlhf_eval_metric", tagged("win_rate"))] == 0.9
    assert samples[("rlhf_test_metric", tagged("rewards/margins"))] == 0.25
    assert samples[("rlhf_trainer_info", tuple(sorted((*labels, ("stage", "dpo")))))] == 1
    assert ("rlhf_train_metric", tagged("rewards/accuracies")) not in samples

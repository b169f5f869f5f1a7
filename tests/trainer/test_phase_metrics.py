"""A tiny PPO (gae) and GRPO run report where each update's time went: every phase with
positive seconds adding up to no more than the update's wall time, the generation figures,
and the same figures in /metrics. CPU only, the tiny models of test_ppo_core."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rlhf_trainer.phase_timing import PHASES
from rlhf_trainer.telemetry import Telemetry

from tests.trainer.test_estimator_runs import make_loop, single_cpu_thread, small

__all__ = ["single_cpu_thread"]  # the fixture, used by every test here


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_every_update_reports_its_phases_and_metrics_exports_them(estimator: str) -> None:
    logged: list[dict[str, float]] = []
    telemetry = Telemetry("ns", "tiny", "PPOJob", serve=False)

    def on_log(step: int, total: int, metrics: dict[str, float]) -> None:
        logged.append(metrics)
        telemetry.record_metrics(metrics, step)

    loop = make_loop(small(estimator, updates=2), on_log=on_log)
    loop.train()
    assert len(logged) == 2
    for metrics in logged:
        seconds = {phase: metrics[f"time/{phase}"] for phase in PHASES}
        assert all(value > 0 for value in seconds.values()), seconds
        assert sum(seconds.values()) <= metrics["time/total"]
        assert not any(name.startswith("gpu_memory_peak_bytes/") for name in metrics)  # CPU
        assert 1 <= metrics["completions/mean_length"] <= 6  # response_length 6
        assert 0 <= metrics["completions/clipped_ratio"] <= 1
        tokens = metrics["completions/mean_length"] * 8  # 8 responses per update
        assert metrics["generation/tokens_per_second"] == pytest.approx(
            tokens / seconds["generation"]
        )
        assert ("objective/frac_reward_zero_std" in metrics) == (estimator == "grpo")

    exported: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode()):
        for sample in family.samples:
            exported[(sample.name, sample.labels.get("phase", ""))] = sample.value
    last = logged[-1]
    for phase in PHASES:
        assert exported[("rlhf_ppo_phase_seconds", phase)] == last[f"time/{phase}"]
    assert exported[("rlhf_ppo_update_seconds", "")] == last["time/total"]
    assert exported[("rlhf_ppo_generation_tokens_per_second", "")] > 0
    assert exported[("rlhf_ppo_response_length_tokens", "")] == last["completions/mean_length"]
    assert exported[("rlhf_ppo_truncated_response_ratio", "")] == last["completions/clipped_ratio"]
    assert (("rlhf_ppo_zero_variance_group_ratio", "") in exported) == (estimator == "grpo")

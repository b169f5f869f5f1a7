"""The RL update's phase figures: the pure math (response length, truncated share, tokens per
second), the GPU clock with the CUDA calls faked (synchronised before every clock read, peak
memory per phase), and their Prometheus series."""

from __future__ import annotations

import pytest
import torch
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rlhf_trainer import phase_timing
from rlhf_trainer.phase_timing import (
    PhaseClock,
    response_lengths,
    tokens_per_second,
    truncated_share,
)
from rlhf_trainer.telemetry import Telemetry


def test_response_length_counts_real_tokens_only() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert response_lengths(mask).tolist() == [3.0, 4.0, 1.0]
    assert response_lengths(mask).mean().item() == pytest.approx(8 / 3)


def test_truncated_share_is_the_share_without_a_stop_token() -> None:
    ends = torch.tensor([True, False, True, False, False])
    assert truncated_share(ends).item() == pytest.approx(0.6)
    assert truncated_share(torch.tensor([True, True])).item() == 0.0
    assert truncated_share(torch.zeros(0, dtype=torch.bool)).item() == 0.0


def test_tokens_per_second_from_counts_and_seconds() -> None:
    assert tokens_per_second(96, 0.5) == 192.0
    assert tokens_per_second(96, 0.0) == 0.0


def test_cpu_clock_only_reads_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*arguments: object) -> None:
        raise AssertionError("a CUDA call on a CPU run")

    for name in ("synchronize", "reset_peak_memory_stats", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    ticks = iter([10.0, 11.0, 11.5, 13.0, 14.0, 20.0])
    monkeypatch.setattr(phase_timing.time, "perf_counter", lambda: next(ticks))
    clock = PhaseClock(torch.device("cpu"))
    clock.start_update()  # 10
    with clock.phase("generation"):  # 11 -> 11.5
        pass
    with clock.phase("update"):  # 13 -> 14
        pass
    clock.end_update()  # 20
    assert clock.metrics() == {"time/generation": 0.5, "time/update": 1.0, "time/total": 10.0}


def test_gpu_clock_synchronises_before_each_reading_and_keeps_each_phase_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    allocated = iter([4096.0, 1024.0])
    now = [0.0]

    def perf_counter() -> float:
        calls.append("clock")
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(phase_timing.time, "perf_counter", perf_counter)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset")
    )
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(allocated))
    clock = PhaseClock(torch.device("cuda", 0))
    clock.start_update()
    with clock.phase("generation"):
        calls.append("work")
    with clock.phase("update"):
        calls.append("work")
    clock.end_update()
    phase = ["sync", "reset", "clock", "work", "sync", "clock"]
    assert calls == ["sync", "clock", *phase, *phase, "sync", "clock"]
    figures = clock.metrics()
    assert figures["gpu_memory_peak_bytes/generation"] == 4096.0
    assert figures["gpu_memory_peak_bytes/update"] == 1024.0
    assert figures["time/generation"] == figures["time/update"] == 1.0


def test_phase_figures_have_their_series() -> None:
    telemetry = Telemetry("ns", "job", "PPOJob", serve=False)
    telemetry.record_metrics(
        {
            "time/generation": 1.5,
            "time/update": 2.0,
            "time/total": 4.0,
            "gpu_memory_peak_bytes/generation": 2048.0,
            "generation/tokens_per_second": 300.0,
            "completions/mean_length": 12.5,
            "completions/clipped_ratio": 0.25,
            "objective/frac_reward_zero_std": 0.5,
        }
    )
    found: dict[tuple[str, str], float] = {}
    text = generate_latest(telemetry.registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels.get("phase", ""))] = sample.value
    assert found[("rlhf_ppo_phase_seconds", "generation")] == 1.5
    assert found[("rlhf_ppo_phase_seconds", "update")] == 2.0
    assert found[("rlhf_ppo_update_seconds", "")] == 4.0
    assert found[("rlhf_ppo_phase_gpu_memory_peak_bytes", "generation")] == 2048.0
    assert found[("rlhf_ppo_generation_tokens_per_second", "")] == 300.0
    assert found[("rlhf_ppo_response_length_tokens", "")] == 12.5
    assert found[("rlhf_ppo_truncated_response_ratio", "")] == 0.25
    assert found[("rlhf_ppo_zero_variance_group_ratio", "")] == 0.5
    assert not any(name == "rlhf_train_metric" for name, _ in found)

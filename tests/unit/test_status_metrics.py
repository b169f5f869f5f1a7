"""What of a running trainer's figures the CR status keeps: the RL update's phase seconds,
tokens/s, response length and truncated share, not its per-phase GPU memory peaks."""

from __future__ import annotations

from rlhf_operator import cache
from rlhf_operator.chaining import Decision
from rlhf_operator.status import observe

from tests.unit.test_podwait import _job, batch_job, pod, stamp

PROGRESS = {
    "state": "training",
    "progress": {"step": 2, "totalSteps": 4},
    "metrics": {
        "objective/scores": 0.5,
        "time/generation": 1.25,
        "time/update": 0.75,
        "time/total": 2.5,
        "time/advantages": 0.001,
        "generation/tokens_per_second": 400.0,
        "completions/mean_length": 12.0,
        "completions/clipped_ratio": 0.125,
        "gpu_memory_peak_bytes/generation": 3.0e9,
        "gpu_memory_peak_bytes/update": 5.0e9,
    },
}


def test_status_keeps_phase_seconds_and_generation_figures_but_not_memory_peaks() -> None:
    status = observe(
        _job(),
        {},
        Decision("ready"),
        batch_job(),
        [cache.trim_pod(pod("Running"))],
        PROGRESS,
        stamp(1),
    ).status
    assert status["phase"] == "Running"
    assert status["metrics"] == {
        "objective/scores": 0.5,
        "time/generation": 1.25,
        "time/update": 0.75,
        "time/total": 2.5,
        "generation/tokens_per_second": 400.0,
        "completions/mean_length": 12.0,
        "completions/clipped_ratio": 0.125,
    }

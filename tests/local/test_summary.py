"""The summary table's figures: read as a person reads them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from rlhf_operator.local.runner import Outcome
from rlhf_operator.local.summary import figure, key_figures


def _ppo(metrics: dict[str, float]) -> Outcome:
    job = SimpleNamespace(kind="PPOJob")
    return Outcome(job, Path("ppo"), "succeeded", 1.0, {"metrics": metrics})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "printed"),
    [(-0.001, "0.00"), (-0.0049, "0.00"), (-0.0, "0.00"), (0.004, "0.00"), (-0.006, "-0.01")],
)
def test_a_figure_that_rounds_to_zero_has_no_sign(value: float, printed: str) -> None:
    assert figure(value) == printed


def test_a_tiny_negative_kl_prints_as_zero() -> None:
    """PPO's k1 KL estimate of a policy that barely moved is a tiny negative number."""
    line = key_figures(
        _ppo(
            {
                "eval/reward_reference": 0.54,
                "eval/reward_policy": 1.2,
                "eval/kl": -0.0012,
                "eval/win_rate": 0.61,
            }
        )
    )
    assert line == "reward 0.54 -> 1.20, KL 0.00, win rate 0.61"
    assert "-0.00" not in line


def test_real_negative_figures_keep_their_sign() -> None:
    line = key_figures(
        _ppo(
            {
                "eval/reward_reference": -0.8,
                "eval/reward_policy": -0.2,
                "eval/kl": 0.31,
                "eval/win_rate": 0.7,
            }
        )
    )
    assert line == "reward -0.80 -> -0.20, KL 0.31, win rate 0.70"

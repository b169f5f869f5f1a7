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


def test_a_dpo_stage_shows_its_held_out_implicit_reward_and_win_rate() -> None:
    job = SimpleNamespace(kind="DPOJob")
    metrics = {
        "eval_rewards/accuracies": 0.75,
        "eval_rewards/margins": 0.5,
        "test_rewards/accuracies": 0.875,
        "test_rewards/margins": 0.25,
        "eval/win_rate": 0.9,
    }
    outcome = Outcome(job, Path("dpo"), "succeeded", 1.0, {"metrics": metrics})  # type: ignore[arg-type]
    assert key_figures(outcome) == "implicit reward accuracy 0.875, margin 0.25, win rate 0.90"

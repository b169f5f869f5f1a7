"""examples/grpo/, run locally: SFT -> reward model -> GRPO (advantageEstimator grpo) on the
tiny preset learns without a value model."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_operator.local.commands import run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "grpo" / "pipeline.yaml"


def test_the_grpo_example_learns_without_a_value_model(tmp_path: Path) -> None:
    with (tmp_path / "printed.txt").open("w") as printed:
        assert run([EXAMPLE], tmp_path, {}, out=printed) == 0
    stage = tmp_path / "grpo-demo-ppo"
    figures = json.loads((stage / "metrics.json").read_text())["metrics"]
    # The policy's answers to held-out prompts score higher than the SFT policy's.
    assert figures["eval/reward_policy"] > figures["eval/reward_reference"] + 0.5, figures
    assert figures["eval/win_rate"] > 0.5, figures
    assert "loss/kl_avg" in figures and "loss/value_avg" not in figures
    assert 0.0 <= figures["objective/frac_reward_zero_std"] <= 1.0
    assert list(stage.glob("checkpoints/checkpoint-*/policy.safetensors"))
    assert not list(stage.rglob("value_model.safetensors"))

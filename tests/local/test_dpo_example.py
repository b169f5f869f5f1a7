"""examples/dpo/pipeline.yaml in local mode: SFT -> DPO with a reward model as judge."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_operator.local.commands import run
from rlhf_operator.local.plan import order
from rlhf_operator.manifests import load_jobs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dpo" / "pipeline.yaml"
FOLDERS = ("dpo-demo-sft", "dpo-judge-rm", "dpo-demo-dpo")


def test_the_plan_runs_dpo_after_its_policy_and_its_judge() -> None:
    jobs = order(load_jobs([EXAMPLE]))
    assert [(job.kind, job.metadata.name) for job in jobs] == [
        ("SFTJob", "dpo-demo"),
        ("RewardModelJob", "dpo-judge"),
        ("DPOJob", "dpo-demo"),
    ]


def test_the_dpo_example_learns_the_preference(tmp_path: Path, capsys) -> None:
    assert run([EXAMPLE], tmp_path, {}) == 0
    printed = capsys.readouterr().out
    for name in FOLDERS:
        assert (tmp_path / name / "model" / "COMPLETE").exists()
    result = json.loads((tmp_path / "dpo-demo-dpo" / "metrics.json").read_text())
    metrics = result["metrics"]
    # Held-out pairs: the implicit reward ranks the chosen answer first.
    assert metrics["eval_rewards/accuracies"] >= 0.9, metrics
    assert metrics["eval_rewards/margins"] > 0, metrics
    # The judge prefers the DPO policy's answers to the SFT policy's.
    assert metrics["eval/reward_policy"] > metrics["eval/reward_reference"], metrics
    assert metrics["eval/win_rate"] > 0.5, metrics
    stage_seconds = [
        json.loads((tmp_path / name / "metrics.json").read_text())["seconds"] for name in FOLDERS
    ]
    assert sum(stage_seconds) < 60, stage_seconds
    assert f"win rate {metrics['eval/win_rate']:.2f}" in printed
    assert "dpo-demo-dpo/report.html" in (tmp_path / "report.html").read_text()

    # A second run finds everything done and trains nothing.
    assert run([EXAMPLE], tmp_path, {}) == 0
    assert capsys.readouterr().out.count("skipped") == 3

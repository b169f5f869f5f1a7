"""examples/smoke/, the cluster smoke test, run locally: it shows learning, and the same
seed gives the same figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rlhf_operator.local.commands import run

ROOT = Path(__file__).resolve().parents[2]
SMOKE = sorted((ROOT / "examples" / "smoke").glob("*.yaml"))
FOLDERS = ("smoke-sft-sft", "smoke-rm-rm", "smoke-ppo-ppo")
# Figures that measure the machine (time, throughput), not the training.
TIMING = ("second", "runtime", "time", "eps")


def _figures(workdir: Path) -> dict[str, dict[str, float]]:
    return {
        name: json.loads((workdir / name / "metrics.json").read_text())["metrics"]
        for name in FOLDERS
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("smoke")
    out = workdir / "printed.txt"
    with out.open("w") as printed:
        assert run(SMOKE, workdir, {}, out=printed) == 0
    return workdir, out.read_text()


def test_the_smoke_pipeline_shows_learning(first_run: tuple[Path, str]) -> None:
    workdir, printed = first_run
    figures = _figures(workdir)
    assert figures["smoke-rm-rm"]["eval_accuracy"] >= 0.9
    ppo = figures["smoke-ppo-ppo"]
    # PPO raises the reward model's score of the policy's answers to held-out prompts,
    # and the PPO policy's answer beats the SFT policy's on most of them.
    assert ppo["eval/reward_policy"] > ppo["eval/reward_reference"] + 0.5, ppo
    assert ppo["eval/win_rate"] > 0.5, ppo
    assert "-0.00" not in printed
    assert f"win rate {ppo['eval/win_rate']:.2f}" in printed


def test_the_same_seed_gives_the_same_figures(first_run: tuple[Path, str], tmp_path: Path) -> None:
    """Seeding before any model is built or loaded: retraining the reward model and PPO
    (the stages whose figures differed between "seeded" runs: margin, win rate) on the same
    SFT model gives the same figures (same machine, same threads). The SFT stage's
    weights repeat exactly as well (tests/trainer)."""
    workdir, _ = first_run
    again_dir = tmp_path / "again"
    shutil.copytree(workdir, again_dir)
    with (tmp_path / "printed.txt").open("w") as printed:
        assert run(SMOKE, again_dir, {}, out=printed, start_from=["smoke-rm"]) == 0
    retrained = json.loads((again_dir / "smoke-rm-rm" / "metrics.json").read_text())
    original = json.loads((workdir / "smoke-rm-rm" / "metrics.json").read_text())
    assert retrained != original  # it ran again (its own times), rather than being skipped
    for name, figures in _figures(workdir).items():
        again = _figures(again_dir)[name]
        trained = {k: v for k, v in figures.items() if not any(t in k for t in TIMING)}
        assert trained, name
        assert trained == {k: again[k] for k in trained}, name

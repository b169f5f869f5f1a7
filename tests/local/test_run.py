"""The demo pipeline end to end, and an interrupted run that resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rlhf_operator.local.commands import run, status

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local" / "pipeline.yaml"


def test_the_demo_shows_learning_and_reports_every_stage(tmp_path: Path, capsys) -> None:
    assert run([DEMO], tmp_path, {}) == 0
    printed = capsys.readouterr().out
    assert "metrics at http://127.0.0.1:" in printed
    for name in ("demo-sft", "demo-rm", "demo-ppo"):
        assert (tmp_path / name / "model" / "COMPLETE").exists()
    figures = {
        name: json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]
        for name in ("demo-sft", "demo-rm", "demo-ppo")
    }
    assert figures["demo-rm"]["eval_accuracy"] >= 0.9
    ppo = figures["demo-ppo"]
    assert ppo["eval/reward_policy"] > ppo["eval/reward_reference"] + 0.5
    assert ppo["eval/win_rate"] > 0.5
    # The summary table prints those same figures.
    assert f"pairwise accuracy {figures['demo-rm']['eval_accuracy']:.3f}" in printed
    assert (
        f"reward {ppo['eval/reward_reference']:.2f} -> {ppo['eval/reward_policy']:.2f}" in printed
    )
    # Hub downloads go to the user's Hugging Face cache, not a cache per workdir.
    config = json.loads((tmp_path / "demo-sft" / "config.json").read_text())
    assert "cache" not in config["paths"]
    report = (tmp_path / "report.html").read_text()
    for name in ("demo-sft", "demo-rm", "demo-ppo"):
        assert f"{name}/report.html" in report
    assert "before PPO (SFT policy)" in report
    # One self-contained page: every stage's curves inline, PPO's reward among them.
    assert "<img" not in report and "<title>reward</title>" in report
    assert report.count("<title>loss</title>") == 3  # a loss chart for each stage

    # A second run finds everything done and trains nothing.
    assert run([DEMO], tmp_path, {}) == 0
    assert capsys.readouterr().out.count("skipped") == 3


def test_ctrl_c_leaves_a_resumable_state_and_the_rerun_finishes(tmp_path: Path) -> None:
    pipeline = list(yaml.safe_load_all(DEMO.read_text()))[:1]
    pipeline[0]["spec"]["training"].update({"maxSteps": 400, "batchSize": 4, "evalSteps": 400})
    pipeline[0]["spec"]["runPolicy"]["checkpointInterval"] = 50
    pipeline[0]["spec"]["generation"]["samples"] = 0
    manifest = tmp_path / "sft.yaml"
    manifest.write_text(yaml.safe_dump(pipeline[0]))
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "rlhf_operator.cli",
        "local",
        "run",
        str(manifest),
        "--workdir",
        str(workdir),
    ]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = workdir / "demo-sft" / "checkpoints" / "checkpoint-50" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output
    assert "run the same command again to resume" in output
    assert not (workdir / "demo-sft" / "model").exists()

    from io import StringIO

    shown = StringIO()
    assert status(workdir, shown) == 0
    assert "resumable  from step" in shown.getvalue()

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    log = (workdir / "demo-sft" / "trainer.log").read_text()
    assert "resuming from checkpoint-" in log
    assert json.loads((workdir / "demo-sft" / "metrics.json").read_text())["steps"] == 400

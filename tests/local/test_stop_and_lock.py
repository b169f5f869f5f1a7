"""However `rlhf local run` is stopped, no trainer outlives it; one run per workdir; a
changed manifest is refused until the user says to retrain."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "local" / "pipeline.yaml"


def _sft_manifest(tmp_path: Path, **training: object) -> Path:
    document = next(iter(yaml.safe_load_all(DEMO.read_text())))
    document["spec"]["training"].update(training)
    document["spec"]["generation"]["samples"] = 0
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _command(manifest: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlhf_operator.cli",
        "local",
        "run",
        str(manifest),
        "--workdir",
        str(workdir),
        *extra,
    ]


def _trainers(config: Path) -> list[int]:
    """Processes running a trainer with this config."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"rlhf_trainer" in argv and str(config).encode() in argv:
            found.append(int(entry.name))
    return found


def _wait_for_training(workdir: Path, process: subprocess.Popen) -> Path:
    """Until the trainer serves progress (it has started training)."""
    log = workdir / "demo-sft" / "trainer.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "metrics and progress at" in log.read_text()):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return workdir / "demo-sft" / "config.json"


@pytest.mark.parametrize(
    ("stop", "exit_code"),
    [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGKILL, -9)],
)
def test_no_trainer_outlives_the_command(tmp_path: Path, stop: int, exit_code: int) -> None:
    manifest = _sft_manifest(tmp_path, maxSteps=5000, batchSize=4, evalSteps=5000)
    workdir = tmp_path / "run"
    first = subprocess.Popen(
        _command(manifest, workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    config = _wait_for_training(workdir, first)
    assert _trainers(config), "the trainer should be running"

    if stop == signal.SIGTERM:
        # While it runs, a second run on the same workdir is refused and says who holds it.
        second = subprocess.run(
            _command(manifest, workdir), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"in use by process {first.pid}" in second.stderr
        deadline = time.monotonic() + 60
        while True:  # "starting" until the trainer reports its first step
            shown = subprocess.run(
                [sys.executable, "-m", "rlhf_operator.cli", "local", "status", str(workdir)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "SFTJob/demo  running" in shown.stdout, shown.stdout
            if "/5000 (" in shown.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "/5000 (" in shown.stdout and "running now: process" in shown.stdout

    first.send_signal(stop)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == exit_code, output
    deadline = time.monotonic() + 60
    while _trainers(config):
        assert time.monotonic() < deadline, "the trainer outlived rlhf local run"
        time.sleep(0.2)
    if stop != signal.SIGKILL:
        # A clean stop: the trainer checkpointed, and the run says how to carry on.
        assert any((workdir / "demo-sft" / "checkpoints").glob("checkpoint-*"))
        assert "run the same command again to resume" in output


def test_a_changed_manifest_is_refused_then_retrained_with_restart(tmp_path: Path) -> None:
    manifest = _sft_manifest(tmp_path, maxSteps=20, evalSteps=20)
    workdir = tmp_path / "run"
    done = subprocess.run(_command(manifest, workdir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = workdir / "demo-sft" / "metrics.json"
    assert json.loads(metrics.read_text())["steps"] == 20

    changed = _sft_manifest(tmp_path, maxSteps=30, evalSteps=30)
    refused = subprocess.run(_command(changed, workdir), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "spec.training.maxSteps: 20 -> 30" in refused.stderr
    assert "--restart" in refused.stderr
    assert json.loads(metrics.read_text())["steps"] == 20  # nothing was touched

    again = subprocess.run(
        _command(changed, workdir, "--restart"), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(metrics.read_text())["steps"] == 30
    skipped = subprocess.run(_command(changed, workdir), capture_output=True, text=True, timeout=60)
    assert skipped.returncode == 0 and "skipped" in skipped.stdout


def test_status_shows_a_failed_stage_with_its_exit_code_and_how_to_carry_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"unexpected": "column"}) + "\n")
    document = {
        "apiVersion": "rlhf.dev/v1alpha1",
        "kind": "SFTJob",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"preset": "tiny"},
            "dataset": {"pvc": {"claimName": "data", "path": "train.jsonl"}},
            "resources": {"gpusPerNode": 0},
        },
    }
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(document))
    workdir = tmp_path / "run"
    failed = subprocess.run(
        _command(manifest, workdir, "--claim", f"data={data}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    shown = subprocess.run(
        [sys.executable, "-m", "rlhf_operator.cli", "local", "status", str(workdir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "SFTJob/demo  failed  exit code 65: " in shown.stdout, shown.stdout
    assert "cannot tell the format" in shown.stdout
    assert f"--claim data={data.resolve()}" in shown.stdout
    assert str(manifest.resolve()) in shown.stdout


def test_two_quick_presses_abort_at_once_and_say_nothing_will_be_resumed(tmp_path: Path) -> None:
    """Ctrl-C twice in quick succession: the second aborts the trainer without waiting
    for a checkpoint; no traceback, no trainer left, and a truthful last word."""
    manifest = _sft_manifest(tmp_path, maxSteps=5000, batchSize=4, evalSteps=5000)
    document = yaml.safe_load(manifest.read_text())
    document["spec"]["runPolicy"]["checkpointInterval"] = 5000
    manifest.write_text(yaml.safe_dump(document))
    workdir = tmp_path / "run"
    first = subprocess.Popen(
        _command(manifest, workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    config = _wait_for_training(workdir, first)
    first.send_signal(signal.SIGINT)
    time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=60)
    assert first.returncode == 130, output
    assert "Traceback" not in output
    deadline = time.monotonic() + 30
    while _trainers(config):
        assert time.monotonic() < deadline, "the trainer outlived rlhf local run"
        time.sleep(0.2)
    complete = [
        path
        for path in (workdir / "demo-sft" / "checkpoints").glob("checkpoint-*")
        if (path / "trainer_state.json").exists()
    ]
    # Usually both presses land in one poll: killed at once, nothing saved. When they
    # straddle one, the first may have had a checkpoint saved: the last word says which.
    assert "again: aborting without a checkpoint" in output or complete, output
    assert ("run the same command again to resume" in output) == bool(complete), output
    assert ("nothing will be resumed" in output) == (not complete), output

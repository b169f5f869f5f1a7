"""Killed or stopped runs resume from their checkpoint; two processes train data-parallel."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rlhf_trainer.lifecycle import EXIT_INTERRUPTED

from tests.trainer.conftest import CPU, job_manifest, summary

SPEC = {
    **CPU,
    "model": {"preset": "tiny"},
    "dataset": {"preset": "tiny"},
    "training": {
        "maxSteps": 300,
        "learningRate": 1e-3,
        "batchSize": 4,
        "maxLength": 64,
        "loggingSteps": 10,
    },
    "generation": {"samples": 0},
    "runPolicy": {"checkpointInterval": 40, "checkpointsToKeep": 2},
}


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_trainer", "sft", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_checkpoint(output: Path, step: int, process: subprocess.Popen[str]) -> None:
    marker = output / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=300)
    return process.returncode, out


def test_a_killed_run_resumes_from_its_last_checkpoint(write_config) -> None:
    config, output = write_config(job_manifest("SFTJob", "resume", SPEC))
    first = _start(config)
    _wait_for_checkpoint(output, 40, first)
    first.kill()  # no chance to clean up: a crash, an OOM kill, a lost node
    first.wait()
    assert not (output / "model").exists()
    saved = sorted(
        int(p.name.split("-")[1])
        for p in (output / "checkpoints").glob("checkpoint-*")
        if (p / "trainer_state.json").exists()
    )
    assert saved and saved[-1] < 300

    code, log = _finish(_start(config))
    assert code == 0, log
    assert f"resuming from checkpoint-{saved[-1]}" in log
    result = summary(output)
    assert result["steps"] == 300
    # It continued from the checkpoint, and its curves keep their start: the history
    # holds every logging step once, the ones before the checkpoint from the first run.
    logged = [row["step"] for row in result["history"] if "loss" in row]
    assert logged == sorted(set(logged)) and logged[0] < saved[-1]
    assert set(range(10, 301, 10)) <= set(logged)
    assert "<title>loss</title>" in (output / "report.html").read_text()
    state = json.loads(
        (output / "checkpoints" / "checkpoint-280" / "trainer_state.json").read_text()
    )
    assert state["global_step"] == 280


def test_sigterm_saves_a_checkpoint_then_the_rerun_finishes(write_config) -> None:
    config, output = write_config(job_manifest("SFTJob", "graceful", SPEC))
    first = _start(config)
    _wait_for_checkpoint(output, 40, first)
    first.send_signal(signal.SIGTERM)  # what the kubelet sends on eviction or suspension
    code, log = _finish(first)
    assert code == EXIT_INTERRUPTED, log
    assert "saving a checkpoint and stopping" in log
    assert not (output / "model").exists()
    # Its report is there already (a pipeline report links to it), with the curves so far.
    report = (output / "report.html").read_text()
    assert "Interrupted in" in report and "<title>loss</title>" in report
    resumed_from = max(
        int(p.name.split("-")[1]) for p in (output / "checkpoints").glob("checkpoint-*")
    )
    assert 40 <= resumed_from < 300

    code, log = _finish(_start(config))
    assert code == 0 and f"resuming from checkpoint-{resumed_from}" in log
    assert summary(output)["steps"] == 300


def test_two_process_data_parallel_sft(write_config) -> None:
    spec = {**SPEC, "training": {**SPEC["training"], "maxSteps": 20}}
    config, output = write_config(job_manifest("SFTJob", "ddp", spec))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "rlhf_trainer",
            "sft",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = summary(output)
    assert done["worldSize"] == 2 and done["steps"] == 20
    assert (output / "model" / "COMPLETE").exists()


def test_the_published_model_is_readable_by_other_users(tmp_path: Path) -> None:
    """A serving pod runs as another uid: model/ 0755 and its files 0644 (mkdtemp made
    model/ 0700)."""
    import stat

    from rlhf_trainer.lifecycle import publish_model

    def save(folder: Path) -> None:
        (folder / "weights").mkdir()
        (folder / "weights" / "model.safetensors").write_bytes(b"x")
        (folder / "weights" / "model.safetensors").chmod(0o600)

    published = publish_model(tmp_path, save)
    for path in [published, *published.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_checkpoints_of_another_spec_are_not_resumed(write_config) -> None:
    """A job re-created with the same name on a kept claim (issue 14, item 6): the earlier
    run's checkpoints are not resumed by a changed spec; the same spec resumes them."""
    config, output = write_config(job_manifest("SFTJob", "recreated", SPEC))
    first = _start(config)
    _wait_for_checkpoint(output, 40, first)
    first.send_signal(signal.SIGTERM)
    code, log = _finish(first)
    assert code == EXIT_INTERRUPTED, log
    recorded = json.loads((output / "checkpoints" / "spec.json").read_text())
    assert recorded["spec"]["training"]["learningRate"] == 1e-3

    changed = {**SPEC, "training": {**SPEC["training"], "learningRate": 5e-4, "maxSteps": 60}}
    config, _ = write_config(job_manifest("SFTJob", "recreated", changed))
    code, log = _finish(_start(config))
    assert code == 0, log
    assert "resuming from" not in log
    assert "not resuming the checkpoints" in log
    assert "spec.training.learningRate: 0.001 -> 0.0005" in log
    result = summary(output)
    assert result["steps"] == 60
    logged = [row["step"] for row in result["history"] if "loss" in row]
    assert logged[0] <= 10  # trained from the start, not from checkpoint-40
    assert (
        json.loads((output / "checkpoints" / "spec.json").read_text())["spec"]["training"][
            "learningRate"
        ]
        == 5e-4
    )

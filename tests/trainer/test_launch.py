"""The trainer's launcher (rlhf_trainer.launch): torchrun's agent, run for real on two CPU
processes, with the trainer's exit code as the launcher's and the pod's grace period as the
workers' time to checkpoint after SIGTERM (issue 14 item 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rlhf_trainer.launch import exit_code, shutdown_seconds, with_shutdown_timeout

WORKER = Path(__file__).with_name("launch_worker.py")
LAUNCHER = [sys.executable, "-m", "rlhf_trainer.launch"]


def _launch(
    folder: Path, environment: dict[str, str], script: list[str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *LAUNCHER,
            "--nproc_per_node=2",
            "--standalone",
            "--monitor-interval=0.1",
            *(script or [str(WORKER)]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WORKER_FOLDER": str(folder), **environment},
    )


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, out


@pytest.mark.parametrize(("rank", "code"), [(1, 65), (0, 78), (1, 3)])
def test_the_failing_ranks_exit_code_is_the_launchers(tmp_path: Path, rank: int, code: int) -> None:
    """Bare torchrun exits 1 here whatever the worker exited with."""
    process = _launch(tmp_path, {"WORKER_FAIL_RANK": str(rank), "WORKER_FAIL_CODE": str(code)})
    returncode, log = _finish(process)
    assert returncode == code, log[-3000:]
    assert f"rank {rank}: {code}" in log


def test_the_trainers_config_error_under_the_launcher_exits_78(tmp_path: Path) -> None:
    """The real trainer on both ranks: a config it cannot read is EX_CONFIG, not 1."""
    process = _launch(
        tmp_path,
        {},
        ["-m", "rlhf_trainer", "sft", "--config", str(tmp_path / "missing.json")],
    )
    returncode, log = _finish(process)
    assert returncode == 78, log[-3000:]


def test_sigterm_leaves_the_workers_the_grace_period_to_checkpoint(tmp_path: Path) -> None:
    """torch's own shutdown timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, 30 s by default, 1 s
    here) SIGKILLs workers still checkpointing; the launcher's timeout (the pod's grace
    period less a margin; 20 s here through RLHF_SHUTDOWN_TIMEOUT_SECONDS) lets a 4 s
    checkpoint finish on both ranks, and the launcher exits 143 like the trainer."""
    process = _launch(
        tmp_path,
        {
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "1",
            "RLHF_SHUTDOWN_TIMEOUT_SECONDS": "20",
            "WORKER_CHECKPOINT_SECONDS": "4",
        },
    )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("up-*"))) < 2:
        assert process.poll() is None, _finish(process)[1][-3000:]
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # the kubelet signals the container's first process
    returncode, log = _finish(process)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-0",
        "checkpoint-1",
    ], log[-3000:]
    assert returncode == 143, log[-3000:]


def _failure(code: int, timestamp: int) -> SimpleNamespace:
    return SimpleNamespace(exitcode=code, timestamp=timestamp)


def test_exit_code_prefers_a_user_error_then_the_first_failure() -> None:
    assert exit_code({0: _failure(1, 5), 1: _failure(65, 7)}) == 65
    assert exit_code({0: _failure(1, 9), 1: _failure(3, 7)}) == 3
    assert exit_code({1: _failure(4, 7), 0: _failure(5, 7)}) == 5  # same second: lowest rank
    assert exit_code({0: _failure(143, 7), 1: _failure(3, 7)}) == 3  # 0 stopped by the agent
    assert exit_code({0: _failure(143, 7)}) == 143
    assert exit_code({0: _failure(-9, 1)}) == 137  # SIGKILL, as a shell reports it


def test_the_launcher_accepts_a_shutdown_timeout_on_any_torch() -> None:
    """torch before 2.12 (the default CUDA base image has 2.9) has no such option: the
    launcher adds it to torchrun's parser; the script's own arguments stay its own."""
    from argparse import REMAINDER, ArgumentParser

    from torch.distributed.run import get_args_parser

    old = ArgumentParser()  # torchrun's parser without the option, as before 2.12
    old.add_argument("--standalone", action="store_true")
    old.add_argument("training_script")
    old.add_argument("training_script_args", nargs=REMAINDER)
    parsed = with_shutdown_timeout(old).parse_args(
        ["--shutdown-timeout", "7", "script.py", "--shutdown-timeout=1"]
    )
    assert parsed.shutdown_timeout == 7 and parsed.training_script_args == ["--shutdown-timeout=1"]
    current = with_shutdown_timeout(get_args_parser())  # 2.15 has its own: kept
    assert current.parse_args(["--shutdown_timeout=9", "s.py"]).shutdown_timeout == 9


def test_without_torchs_shutdown_timeout_the_workers_close_with_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback for torch < 2.12, whose agent calls PContext.close(death_sig) and so
    waits that method's default, 30 s: the default becomes the launcher's timeout."""
    import dataclasses

    from rlhf_trainer import launch
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.launcher import api as launcher_api

    @dataclasses.dataclass
    class OldLaunchConfig:
        min_nodes: int = 1

    seen: list[tuple] = []
    monkeypatch.setattr(launcher_api, "LaunchConfig", OldLaunchConfig)
    monkeypatch.setattr(
        api.PContext,
        "close",
        lambda self, death_sig=None, timeout=30: seen.append((death_sig, timeout)),
    )
    arguments = SimpleNamespace(shutdown_timeout=None)
    launch._set_shutdown_timeout(arguments, 110)
    api.PContext.close(object(), signal.SIGTERM)  # as torch 2.9's agent closes its workers
    assert seen == [(signal.SIGTERM, 110)] and arguments.shutdown_timeout is None


def test_shutdown_seconds_default_to_the_grace_period_less_a_margin() -> None:
    assert shutdown_seconds({}) == 110
    assert shutdown_seconds({"RLHF_SHUTDOWN_TIMEOUT_SECONDS": "42"}) == 42


def _rendered_group_command(start_deadline_seconds: int, port: int, rank: int) -> list[str]:
    """The launcher arguments the operator renders for rank ``rank`` of a two-node job,
    pointed at this machine (the kubelet would expand $(JOB_COMPLETION_INDEX))."""
    from rlhf_operator.api import parse_manifest
    from rlhf_operator.resources import batch_job
    from rlhf_operator.settings import OperatorSettings

    from tests.invalid_manifests import minimal_manifest

    manifest = minimal_manifest("SFTJob", "group")
    manifest["metadata"].update({"namespace": "team", "uid": "1"})
    manifest["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 0}
    manifest["spec"]["output"] = {"accessModes": ["ReadWriteMany"]}
    manifest["spec"]["runPolicy"] = {"startDeadlineSeconds": start_deadline_seconds}
    rendered = batch_job(parse_manifest(manifest), OperatorSettings(), {}, "h")
    command = rendered["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "rlhf_trainer.launch"]
    arguments = []
    for argument in command[3 : command.index("-m", 3)]:
        argument = argument.replace("$(JOB_COMPLETION_INDEX)", str(rank))
        if argument.startswith("--master_addr="):
            argument = "--master_addr=127.0.0.1"
        if argument.startswith("--master_port="):
            argument = f"--master_port={port}"
        arguments.append(argument)
    return [*LAUNCHER, *arguments, "--monitor-interval=0.1", str(WORKER)]


def test_the_rendered_rendezvous_timeout_reaches_the_static_rendezvous(tmp_path: Path) -> None:
    """Rank 0 of the operator's command waits startDeadlineSeconds + 60 s for the other
    rank (the static rendezvous' TCPStore timeout, --rdzv_conf=timeout=), then gives up:
    70 s here (the smallest start deadline), not torch's 600 s default. A rank that comes
    later within that time joins, and the group runs."""
    from tests.trainer.test_distributed import _free_port

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WORKER_FOLDER": str(tmp_path)}
    port = _free_port()
    started = time.monotonic()
    alone = subprocess.Popen(
        _rendered_group_command(10, port, 0),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    returncode, log = _finish(alone, timeout=200)
    waited = time.monotonic() - started
    assert returncode != 0, log[-3000:]
    assert 60 <= waited < 150, (waited, log[-3000:])

    # A late rank joins within the timeout: both run (and rank 1 fails with 3 as told).
    port = _free_port()
    environment.update({"WORKER_FAIL_RANK": "1", "WORKER_FAIL_CODE": "3"})
    first = subprocess.Popen(
        _rendered_group_command(10, port, 0),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    time.sleep(5)
    late = subprocess.Popen(
        _rendered_group_command(10, port, 1),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    late_code, late_log = _finish(late)
    assert late_code == 3, late_log[-3000:]
    first.send_signal(signal.SIGTERM)  # as the Job controller stops the other ranks
    first_code, first_log = _finish(first)
    assert first_code in (1, 143), first_log[-3000:]
    assert sorted(p.name for p in tmp_path.glob("up-*")) == ["up-0", "up-1"]

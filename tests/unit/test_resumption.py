"""Which checkpoints a re-created job may resume (issue 14, item 6): only its own spec's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rlhf_operator.api import parse_manifest
from rlhf_trainer.errors import TransientError
from rlhf_trainer.resumption import SPEC_FILE, checkpoint_spec, prepare_checkpoints


def _job(**spec: object):  # type: ignore[no-untyped-def]
    return parse_manifest(
        {
            "apiVersion": "rlhf.dev/v1alpha1",
            "kind": "SFTJob",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {"model": {"preset": "tiny"}, "dataset": {"preset": "tiny"}, **spec},
        }
    )


def _checkpoint(folder: Path, step: int) -> None:
    (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")


def test_the_same_spec_keeps_its_checkpoints_and_a_run_policy_edit_does_too(tmp_path) -> None:
    folder = tmp_path / "checkpoints"
    prepare_checkpoints(folder, _job(), is_main=True)
    _checkpoint(folder, 40)
    edited = _job(runPolicy={"backoffLimit": 7, "suspend": True}, resources={"nodes": 1})
    prepare_checkpoints(folder, edited, is_main=True)
    assert (folder / "checkpoint-40").is_dir()


def test_another_spec_removes_the_checkpoints_and_records_its_own(tmp_path, capsys) -> None:
    folder = tmp_path / "checkpoints"
    prepare_checkpoints(folder, _job(), is_main=True)
    _checkpoint(folder, 40)
    changed = _job(training={"learningRate": 1e-4})
    prepare_checkpoints(folder, changed, is_main=True)
    assert not (folder / "checkpoint-40").exists()
    assert json.loads((folder / SPEC_FILE).read_text()) == checkpoint_spec(changed)
    assert "spec.training.learningRate: 2e-05 -> 0.0001" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoints"]


def test_checkpoints_that_record_no_spec_are_not_resumed(tmp_path, capsys) -> None:
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, 40)  # made before checkpoints recorded their spec
    prepare_checkpoints(folder, _job(), is_main=True)
    assert not (folder / "checkpoint-40").exists()
    assert "do not record the spec" in capsys.readouterr().err


def test_another_distributed_strategy_is_not_resumed(tmp_path) -> None:
    folder = tmp_path / "checkpoints"
    gpus = {"gpusPerNode": 1}
    prepare_checkpoints(folder, _job(resources=gpus), is_main=True)
    _checkpoint(folder, 40)
    sharded = _job(resources=gpus, distributed={"strategy": "fsdp"})
    prepare_checkpoints(folder, sharded, is_main=True)
    assert not (folder / "checkpoint-40").exists()


def test_other_ranks_wait_for_rank_zero_to_record_the_spec(tmp_path) -> None:
    folder = tmp_path / "checkpoints"
    _checkpoint(folder, 40)
    naps: list[float] = []

    def rank_zero_meanwhile(seconds: float) -> None:
        naps.append(seconds)
        prepare_checkpoints(folder, _job(), is_main=True)

    prepare_checkpoints(folder, _job(), is_main=False, sleep=rank_zero_meanwhile)
    assert naps and not (folder / "checkpoint-40").exists()
    with pytest.raises(TransientError, match="rank 0 did not prepare"):
        prepare_checkpoints(folder, _job(training={"seed": 1}), is_main=False, wait_seconds=0)

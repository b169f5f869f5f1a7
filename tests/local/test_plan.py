"""Local mode refuses bad pipelines before anything runs, in the apiserver's words."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rlhf_operator.api import ManifestError
from rlhf_operator.local.plan import order
from rlhf_operator.manifests import load_jobs

from tests.invalid_manifests import minimal_manifest

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, *documents: dict) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text("---\n".join(yaml.safe_dump(d) for d in documents))
    return path


def _sft(name: str, upstream: str | None = None) -> dict:
    manifest = minimal_manifest("SFTJob", name)
    if upstream:
        manifest["spec"]["model"] = {"fromJob": {"name": upstream}}
    return manifest


def test_jobs_run_after_what_they_read_from_whatever_the_file_order(tmp_path) -> None:
    ppo = minimal_manifest("PPOJob", "c")
    ppo["spec"]["policy"] = {"fromJob": {"name": "a"}}
    ppo["spec"]["rewardModel"] = {"fromJob": {"kind": "RewardModelJob", "name": "b"}}
    reward = minimal_manifest("RewardModelJob", "b")
    reward["spec"]["model"] = {"fromJob": {"name": "a"}}
    jobs = order(load_jobs([_write(tmp_path, ppo, reward, _sft("a"))]))
    assert [(job.kind, job.metadata.name) for job in jobs] == [
        ("SFTJob", "a"),
        ("RewardModelJob", "b"),
        ("PPOJob", "c"),
    ]


def test_the_demo_pipeline_orders_sft_rm_ppo() -> None:
    jobs = order(load_jobs([ROOT / "examples" / "local" / "pipeline.yaml"]))
    assert [job.kind for job in jobs] == ["SFTJob", "RewardModelJob", "PPOJob"]


def test_a_cycle_is_named(tmp_path) -> None:
    path = _write(tmp_path, _sft("a", "b"), _sft("b", "a"))
    with pytest.raises(ManifestError, match="cycle: SFTJob/a -> SFTJob/b -> SFTJob/a"):
        order(load_jobs([path]))


def test_a_dangling_reference_is_named(tmp_path) -> None:
    path = _write(tmp_path, _sft("a", "missing"))
    with pytest.raises(
        ManifestError, match="reads from SFTJob/missing, which is not in the given files"
    ):
        order(load_jobs([path]))


def test_a_job_defined_twice_is_refused(tmp_path) -> None:
    path = _write(tmp_path, _sft("a"), _sft("a"))
    with pytest.raises(ManifestError, match="SFTJob/a is defined twice"):
        order(load_jobs([path]))


def test_an_invalid_field_is_refused_with_the_apiserver_message(tmp_path) -> None:
    bad = _sft("a")
    bad["spec"]["model"] = {"preset": "tiny", "hub": {"id": "x"}}
    with pytest.raises(ManifestError) as refused:
        load_jobs([_write(tmp_path, bad)])
    assert "spec.model: model source: set exactly one of hub, pvc, fromJob or preset" in str(
        refused.value
    )

"""The API models: parsing, defaults, round trips and refusal of bad manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rlhf_operator.api import (
    KINDS,
    ManifestError,
    PPOJob,
    SFTJob,
    parse_manifest,
)
from rlhf_operator.manifests import load_jobs

from tests.invalid_manifests import CASES, InvalidCase, build, minimal_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_models_refuse_invalid_manifest_naming_the_field(case: InvalidCase) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_manifest(build(case))
    message = str(refused.value)
    assert case.path in message
    assert case.fragment in message


def test_there_are_at_least_twenty_invalid_cases() -> None:
    assert len(CASES) >= 20
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("kind", [info.kind for info in KINDS])
def test_minimal_manifest_is_valid_and_filled_with_defaults(kind: str) -> None:
    job = parse_manifest(minimal_manifest(kind))
    spec = job.spec
    assert spec.resources.nodes == 1
    assert spec.output.access_modes == ["ReadWriteOnce"]
    assert spec.run_policy.backoff_limit == 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLES])
def test_examples_round_trip_stably(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        once = parse_manifest(document).to_manifest()
        twice = parse_manifest(once).to_manifest()
        assert once == twice
        # Nothing the user wrote is lost on the way through the models.
        assert _contains(once, document)


def _contains(big: object, small: object) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            key in big and _contains(big[key], value) for key, value in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(big) == len(small)
            and all(_contains(b, s) for b, s in zip(big, small, strict=True))
        )
    return big == small


def test_pipeline_chains_the_three_stages() -> None:
    jobs = load_jobs([ROOT / "examples" / "pipeline.yaml"])
    assert [job.kind for job in jobs] == ["SFTJob", "RewardModelJob", "PPOJob"]
    sft, reward, ppo = jobs
    assert isinstance(ppo, PPOJob) and isinstance(sft, SFTJob)
    assert reward.spec.model.from_job.name == sft.metadata.name
    assert ppo.spec.policy.from_job.name == sft.metadata.name
    assert ppo.spec.reward_model.from_job.name == reward.metadata.name


def test_python_names_are_snake_case_and_yaml_names_camel_case() -> None:
    job = parse_manifest(minimal_manifest("PPOJob"))
    assert job.spec.ppo.kl_coef == 0.05
    assert job.spec.ppo.lambda_ == 0.95
    manifest = job.to_manifest()
    assert manifest["spec"]["ppo"]["klCoef"] == 0.05
    assert manifest["spec"]["ppo"]["lambda"] == 0.95
    assert manifest["spec"]["rewardModel"]["fromJob"]["kind"] == "RewardModelJob"


def test_wrong_api_version_and_kind_are_named() -> None:
    manifest = minimal_manifest("SFTJob")
    manifest["apiVersion"] = "rlhf.dev/v1"
    with pytest.raises(ManifestError, match=r'apiVersion: must be "rlhf\.dev/v1alpha1"'):
        parse_manifest(manifest)
    manifest = minimal_manifest("SFTJob")
    manifest["kind"] = "KTOJob"
    with pytest.raises(
        ManifestError, match="kind: must be one of SFTJob, RewardModelJob, PPOJob, DPOJob"
    ):
        parse_manifest(manifest)


def test_load_jobs_names_the_file_and_document(tmp_path: Path) -> None:
    good = yaml.safe_dump(minimal_manifest("SFTJob", "first"))
    bad = minimal_manifest("PPOJob", "second")
    bad["spec"]["ppo"] = {"klCoef": -1}
    path = tmp_path / "jobs.yaml"
    path.write_text(good + "---\n" + yaml.safe_dump(bad))
    with pytest.raises(ManifestError) as refused:
        load_jobs([path])
    assert f"{path} (document 2)" in str(refused.value)
    assert "spec.ppo.klCoef" in str(refused.value)


def test_other_kinds_in_a_file_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    job = minimal_manifest("SFTJob")
    path.write_text(yaml.safe_dump(namespace) + "---\n" + yaml.safe_dump(job))
    assert [job.kind for job in load_jobs([path])] == ["SFTJob"]


def test_test_data_class_weights_and_checkpoint_minutes_parse() -> None:
    manifest = minimal_manifest("SFTJob")
    manifest["spec"].update(
        {
            "task": "sequence-classification",
            "labels": ["negative", "positive"],
            "dataset": {"preset": "tiny", "evalFraction": 0.1, "testFraction": 0.2},
            "classWeights": {"weights": {"positive": 3.0}},
            "runPolicy": {"checkpointIntervalMinutes": 0.5},
        }
    )
    spec = parse_manifest(manifest).spec
    assert spec.dataset.test_fraction == 0.2 and spec.dataset.eval_fraction == 0.1
    assert spec.class_weights.weights == {"positive": 3.0} and not spec.class_weights.balanced
    assert spec.run_policy.checkpoint_interval_minutes == 0.5
    assert (
        parse_manifest(minimal_manifest("PPOJob")).spec.run_policy.checkpoint_interval_minutes == 30
    )

"""The generated CRDs on a real apiserver: installed, documented, defaulting and
refusing bad manifests the same way the models do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rlhf_operator.api import KINDS, parse_manifest

from tests.invalid_manifests import CASES, InvalidCase, build, minimal_manifest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.relative_to(ROOT).as_posix() for p in EXAMPLES])
def test_every_example_is_accepted_by_the_apiserver(crds_installed, namespace, path) -> None:
    result = crds_installed.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", str(path)
    )
    assert "created (server dry run)" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_apiserver_refuses_invalid_manifest_naming_the_field(
    crds_installed, namespace, case: InvalidCase
) -> None:
    result = crds_installed.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(build(case)),
        check=False,
    )
    assert result.returncode != 0, f"{case.name} was accepted"
    assert case.path in result.stderr, result.stderr
    assert case.fragment in result.stderr, result.stderr


@pytest.mark.parametrize("kind", [info.kind for info in KINDS])
def test_apiserver_defaults_match_the_models(crds_installed, namespace, kind) -> None:
    manifest = minimal_manifest(kind)
    result = crds_installed.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(manifest),
    )
    defaulted_by_apiserver = json.loads(result.stdout)["spec"]
    defaulted_by_models = parse_manifest(manifest).to_manifest()["spec"]
    assert defaulted_by_apiserver == defaulted_by_models


def test_kubectl_explain_teaches_the_api(crds_installed) -> None:
    spec = crds_installed.kubectl("explain", "sftjob.spec").stdout
    assert "The model to fine-tune" in spec
    assert "task" in spec and "causal-lm" in spec
    ppo = crds_installed.kubectl("explain", "ppojob.spec.ppo.klCoef").stdout
    assert "KL penalty" in ppo
    reward = crds_installed.kubectl("explain", "rm.spec.dataset.format").stdout
    assert "ranking" in reward


def test_get_rlhf_lists_all_three_kinds_with_printer_columns(crds_installed, namespace) -> None:
    for name in ("sftjob", "rewardmodeljob", "ppojob"):
        crds_installed.kubectl(
            "apply", "-n", namespace, "-f", str(ROOT / "examples/smoke" / f"{name}.yaml")
        )
    listed = crds_installed.kubectl("get", "rlhf", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == sorted(
        [
            "sftjob.rlhf.dev/smoke-sft",
            "rewardmodeljob.rlhf.dev/smoke-rm",
            "ppojob.rlhf.dev/smoke-ppo",
        ]
    )
    table = crds_installed.kubectl("get", "sft,rm,ppo", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "METRIC", "AGE"]
    wide = crds_installed.kubectl("get", "rmjob", "-n", namespace, "-o", "wide").stdout
    assert "ATTEMPTS" in wide.splitlines()[0]


def test_status_is_a_subresource(crds_installed, namespace) -> None:
    crds_installed.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/smoke/sftjob.yaml"))
    status = {
        "status": {
            "phase": "Running",
            "progress": {"step": 3, "totalSteps": 30, "percent": 10},
            "keyMetric": "eval_loss=2.1",
            "attempts": 1,
        }
    }
    crds_installed.kubectl(
        "patch",
        "sftjob",
        "smoke-sft",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    # A spec update through the main resource cannot change status.
    crds_installed.kubectl(
        "patch",
        "sftjob",
        "smoke-sft",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Failed"}, "spec": {"runPolicy": {"backoffLimit": 5}}}),
    )
    stored = json.loads(
        crds_installed.kubectl("get", "sftjob", "smoke-sft", "-n", namespace, "-o", "json").stdout
    )
    assert stored["status"]["phase"] == "Running"
    assert stored["spec"]["runPolicy"]["backoffLimit"] == 5
    # What the apiserver stores parses back into the models, status included.
    job = parse_manifest(stored)
    assert job.status is not None and job.status.progress.percent == 10
    row = crds_installed.kubectl("get", "sft", "smoke-sft", "-n", namespace, "--no-headers").stdout
    assert row.split()[1:4] == ["Running", "10", "eval_loss=2.1"]
    assert yaml.safe_load(json.dumps(stored))["metadata"]["generation"] == 2


def test_only_run_policy_can_change_after_creation(crds_installed, namespace) -> None:
    crds_installed.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/smoke/ppojob.yaml"))
    for patch, field in [
        ({"spec": {"policy": {"fromJob": {"name": "other"}}}}, "spec.policy"),
        ({"spec": {"ppo": {"klCoef": 0.5}}}, "spec.ppo"),
        ({"spec": {"queueName": "team-a"}}, "spec.queueName"),
        ({"spec": {"resources": {"gpusPerNode": 8}}}, "spec.resources"),
    ]:
        refused = crds_installed.kubectl(
            "patch",
            "ppojob",
            "smoke-ppo",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
            check=False,
        )
        assert refused.returncode != 0
        assert f"{field}: Forbidden" in refused.stderr
        assert "cannot change once the job exists (only runPolicy can)" in refused.stderr
    allowed = {"spec": {"runPolicy": {"suspend": True, "activeDeadlineSeconds": 600}}}
    crds_installed.kubectl(
        "patch", "ppojob", "smoke-ppo", "-n", namespace, "--type=merge", "-p", json.dumps(allowed)
    )

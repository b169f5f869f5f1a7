"""A multi-node job whose existing claim cannot be mounted on several nodes (issue 14,
item 7), with the real `rlhf operator` against the real apiserver: refused before anything
is created, with a Failed condition and an Event saying which claim and what to set."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.waiting import wait_for

from tests.invalid_manifests import minimal_manifest

pytestmark = pytest.mark.cluster


def _get(cluster, namespace: str, *what: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    result = cluster.kubectl("get", *what, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _apply(cluster, namespace: str, body: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def _claim(name: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _two_node_sft(name: str, claim: str) -> dict[str, Any]:
    job = minimal_manifest("SFTJob", name)
    job["spec"]["resources"] = {"nodes": 2, "gpusPerNode": 0}
    job["spec"]["output"] = {"existingClaim": claim}
    return job


def test_a_read_write_once_claim_of_a_multi_node_job_fails_it_with_the_fix(  # type: ignore[no-untyped-def]
    crds_installed, namespace, operator
) -> None:
    cluster = crds_installed
    _apply(cluster, namespace, _claim("single-node", "ReadWriteOnce"))
    _apply(cluster, namespace, _claim("every-node", "ReadWriteMany"))
    _apply(cluster, namespace, _two_node_sft("narrow", "single-node"))
    _apply(cluster, namespace, _two_node_sft("wide", "every-node"))

    def failed() -> dict[str, Any] | None:
        body = _get(cluster, namespace, "sftjob", "narrow")
        return body if (body or {}).get("status", {}).get("phase") == "Failed" else None

    body = wait_for(failed, timeout=30, what="the job with a ReadWriteOnce claim to fail")
    condition = next(c for c in body["status"]["conditions"] if c["type"] == "Failed")
    assert condition["reason"] == "ClaimNotShared"
    assert "claim single-node, its output (spec.output.existingClaim)" in condition["message"]
    assert "ReadWriteMany" in condition["message"]
    selector = "involvedObject.kind=SFTJob,involvedObject.name=narrow"
    wait_for(
        lambda: any(
            event["reason"] == "ClaimNotShared"
            for event in (_get(cluster, namespace, "events", "--field-selector", selector) or {})[
                "items"
            ]
        ),
        timeout=20,
        what="a ClaimNotShared Event",
    )
    # Nothing was created for it; the job on a ReadWriteMany claim got its Job.
    wait_for(lambda: _get(cluster, namespace, "job", "wide-sft"), timeout=30, what="Job wide-sft")
    assert _get(cluster, namespace, "job", "narrow-sft") is None
    assert _get(cluster, namespace, "configmap", "narrow-sft-config") is None

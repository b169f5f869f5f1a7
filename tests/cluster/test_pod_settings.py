"""spec.pod, spec.resources.network and spec.distributed.nccl on a real apiserver: a job using
every setting is accepted and defaulted as the models default it, and the batch Job the
operator renders from it is accepted too (the apiserver's own Pod validation: volume and
mount names, the securityContext, the extended resources). The refusals are in
tests/invalid_manifests.py (run by test_crds.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rlhf_operator.api import parse_manifest
from rlhf_operator.resources import batch_job
from rlhf_operator.settings import OperatorSettings

from tests.invalid_manifests import minimal_manifest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1")

EVERYTHING: dict[str, Any] = {
    "resources": {
        "nodes": 2,
        "gpusPerNode": 8,
        "network": {"devices": {"rdma/rdma_shared_device_a": 1, "nvidia.com/hostdev": 8}},
    },
    "output": {"accessModes": ["ReadWriteMany"]},
    "distributed": {
        "strategy": "fsdp",
        "nccl": {
            "debug": "INFO",
            "socketIfname": "eth0",
            "ibHca": "=mlx5_0:1,mlx5_1:1",
            "ibGidIndex": 3,
            "variables": {"NCCL_IB_QPS_PER_CONNECTION": "4"},
        },
    },
    "pod": {
        "labels": {"team": "alignment", "example.com/cost-center": "42"},
        "annotations": {
            "sidecar.istio.io/inject": "false",
            "k8s.v1.cni.cncf.io/networks": '[{"name": "rdma-net"}]',
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccountName": "bucket-reader",
        "schedulerName": "volcano",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "example.com/block", "operator": "In", "values": ["a"]}
                            ]
                        }
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"rlhf.dev/job": "everything"}},
                        },
                    }
                ]
            },
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"rlhf.dev/job": "everything"}},
            }
        ],
        "volumes": [
            {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": "hf-models", "readOnly": True},
            },
            {
                "name": "datasets",
                "csi": {
                    "driver": "gcsfuse.csi.storage.gke.io",
                    "readOnly": True,
                    "volumeAttributes": {"bucketName": "my-datasets"},
                },
            },
            {
                "name": "ephemeral",
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "metadata": {"labels": {"team": "alignment"}},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }
                },
            },
        ],
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "models", "mountPath": "/cache/models", "readOnly": True},
            {"name": "datasets", "mountPath": "/datasets", "readOnly": True},
            {"name": "ephemeral", "mountPath": "/spill"},
        ],
        "securityContext": {"assignedByPlatform": True, "runAsUser": 1000680000},
    },
}


def _everything() -> dict[str, Any]:
    manifest = minimal_manifest("SFTJob", "everything")
    manifest["spec"].update(json.loads(json.dumps(EVERYTHING)))
    return manifest


def _server_dry_run(cluster, namespace: str, document: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = cluster.kubectl(
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(document),
    )
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def test_a_job_with_every_pod_setting_is_accepted_and_defaulted_like_the_models(
    crds_installed, namespace
) -> None:
    manifest = _everything()
    stored = _server_dry_run(crds_installed, namespace, manifest)
    assert stored["spec"] == parse_manifest(manifest).to_manifest()["spec"]
    assert stored["spec"]["pod"]["volumes"][0]["emptyDir"]["sizeLimit"] == "64Mi"


@pytest.mark.parametrize("assigned", [True, False], ids=["assigned-ids", "fixed-ids"])
def test_the_rendered_job_is_accepted_by_the_apiserver(crds_installed, namespace, assigned) -> None:
    manifest = _everything()
    manifest["spec"]["pod"]["securityContext"]["assignedByPlatform"] = assigned
    manifest["metadata"].update({"namespace": namespace, "uid": "1234"})
    rendered = batch_job(parse_manifest(manifest), SETTINGS, {}, "h")
    rendered["metadata"].pop("ownerReferences")  # its owner does not exist here
    created = _server_dry_run(crds_installed, namespace, rendered)
    pod = created["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert container["resources"]["limits"]["nvidia.com/hostdev"] == "8"
    assert pod["serviceAccountName"] == "bucket-reader"
    assert pod["automountServiceAccountToken"] is True
    assert [v["name"] for v in pod["volumes"]][-4:] == [
        "scratch",
        "models",
        "datasets",
        "ephemeral",
    ]
    assert ("fsGroup" in pod["securityContext"]) is not assigned


def test_the_crds_fit_a_client_side_kubectl_apply(crds_installed) -> None:
    """The embedded Kubernetes schemas keep each CRD small enough for the last-applied
    annotation of a client-side `kubectl apply` (256 KiB), not only for --server-side."""
    for _ in range(3):  # a conflict with the apiserver's own CRD status writes is retried
        result = crds_installed.kubectl(
            "apply", "--dry-run=server", "-f", str(ROOT / "crds"), check=False
        )
        if result.returncode == 0 or "Too long" in result.stderr:
            break
    assert result.returncode == 0, result.stderr
    crds = len(list((ROOT / "crds").glob("*.yaml")))
    assert crds == 4  # SFTJob, RewardModelJob, PPOJob, DPOJob
    assert result.stdout.count("(server dry run)") == crds, result.stdout

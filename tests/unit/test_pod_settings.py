"""spec.pod, spec.resources.network and spec.distributed.nccl rendered into the training
pods: what each setting adds, what stays the operator's, and that the result is a valid
Kubernetes Job."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from rlhf_operator.api import parse_manifest
from rlhf_operator.api.kubernetes_types import (
    VENDORED,
    build_from_kubernetes_validate,
    render_vendored,
)
from rlhf_operator.resources import batch_job
from rlhf_operator.settings import OperatorSettings

from tests.invalid_manifests import minimal_manifest

SETTINGS = OperatorSettings(trainer_image="registry.example/trainer:1")

OPENSHIFT = {"securityContext": {"assignedByPlatform": True}}
MODEL_CACHE = {
    "volumes": [
        {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
        {"name": "datasets", "csi": {"driver": "gcsfuse.csi.storage.gke.io", "readOnly": True}},
    ],
    "volumeMounts": [
        {"name": "models", "mountPath": "/models", "readOnly": True},
        {"name": "datasets", "mountPath": "/cache/datasets", "readOnly": True},
    ],
}


def _pod(spec: dict[str, Any], kind: str = "SFTJob") -> dict[str, Any]:
    manifest = minimal_manifest(kind, "demo")
    manifest["metadata"].update({"namespace": "team", "uid": "1234"})
    manifest["spec"].update(spec)
    rendered = batch_job(parse_manifest(manifest), SETTINGS, {}, "h")
    kubernetes_validate.validate(rendered, "1.35", strict=True)
    template: dict[str, Any] = rendered["spec"]["template"]
    return template


def test_default_pods_run_as_the_image_user_with_no_token() -> None:
    pod = _pod({})["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    for absent in ("serviceAccountName", "imagePullSecrets", "schedulerName", "affinity"):
        assert absent not in pod
    assert "add" not in pod["containers"][0]["securityContext"]["capabilities"]


def test_openshift_restricted_v2_sets_no_ids_and_keeps_the_hardening() -> None:
    pod = _pod({"pod": OPENSHIFT})["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = pod["containers"][0]["securityContext"]
    assert container == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_ids_set_explicitly_are_kept_in_either_mode() -> None:
    assigned = {"assignedByPlatform": True, "runAsUser": 1000680000, "fsGroup": 1000680000}
    pod = _pod({"pod": {"securityContext": assigned}})["spec"]
    assert {key: pod["securityContext"].get(key) for key in ("runAsUser", "runAsGroup")} == {
        "runAsUser": 1000680000,
        "runAsGroup": None,  # the runtime then gives gid 0, as OpenShift does
    }
    assert pod["securityContext"]["fsGroup"] == 1000680000
    fixed = _pod({"pod": {"securityContext": {"runAsUser": 2000, "fsGroupChangePolicy": "Always"}}})
    context = fixed["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (2000, 1000, 1000)
    assert context["fsGroupChangePolicy"] == "Always"


def test_service_account_brings_its_token_unless_told_otherwise() -> None:
    pod = _pod({"pod": {"serviceAccountName": "bucket-reader"}})["spec"]
    assert pod["serviceAccountName"] == "bucket-reader"
    assert pod["automountServiceAccountToken"] is True
    quiet = {"serviceAccountName": "bucket-reader", "automountServiceAccountToken": False}
    assert _pod({"pod": quiet})["spec"]["automountServiceAccountToken"] is False


def test_pull_secrets_scheduler_affinity_and_spread_reach_the_pod() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "network-block", "operator": "In", "values": ["a"]}
                        ]
                    }
                ]
            }
        }
    }
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"rlhf.dev/job": "demo"}},
    }
    pod = _pod(
        {
            "pod": {
                "imagePullSecrets": [{"name": "registry"}],
                "schedulerName": "volcano",
                "affinity": affinity,
                "topologySpreadConstraints": [spread],
            }
        }
    )["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["schedulerName"] == "volcano"
    assert pod["affinity"] == affinity
    assert pod["topologySpreadConstraints"] == [spread]


def test_extra_volumes_and_mounts_come_after_the_operators() -> None:
    pod = _pod({"pod": MODEL_CACHE})["spec"]
    names = [volume["name"] for volume in pod["volumes"]]
    assert names == ["config", "output", "tmp", "cache", "dshm", "models", "datasets"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert mounts[-2:] == MODEL_CACHE["volumeMounts"]
    assert [m["mountPath"] for m in mounts[:5]] == [
        "/etc/rlhf",
        "/output",
        "/tmp",
        "/cache",
        "/dev/shm",
    ]


def test_labels_and_annotations_are_added_and_the_operators_kept() -> None:
    template = _pod(
        {
            "pod": {
                "labels": {"team": "alignment", "cost-center": "42"},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
            "queueName": "team-a",
        }
    )
    labels = template["metadata"]["labels"]
    assert labels["team"] == "alignment" and labels["cost-center"] == "42"
    assert labels["rlhf.dev/job"] == "demo"
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    annotations = template["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/inject"] == "false"
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["rlhf.dev/config-hash"] == "h"


def test_every_label_and_annotation_the_operator_sets_is_refused_in_spec_pod() -> None:
    """The refusal list and the renderer stay in step: each key the operator puts on a pod
    (with a queue, multi-node) is one spec.pod may not set."""
    template = _pod(
        {
            "queueName": "team-a",
            "resources": {"nodes": 2},
            "output": {"accessModes": ["ReadWriteMany"]},
        }
    )
    for field, keys in (
        ("labels", template["metadata"]["labels"]),
        ("annotations", template["metadata"]["annotations"]),
    ):
        for key in keys:
            manifest = minimal_manifest("SFTJob")
            manifest["spec"]["pod"] = {field: {key: "x"}}
            with pytest.raises(ValueError, match="are set by the operator"):
                parse_manifest(manifest)


def test_every_volume_and_mount_of_the_operator_is_refused_in_spec_pod() -> None:
    with_cache = minimal_manifest("PPOJob")
    with_cache["spec"]["modelCache"] = {"claimName": "hf-cache"}
    rendered = batch_job(
        parse_manifest(with_cache),
        SETTINGS,
        {"policy": ("p", "model"), "rewardModel": ("r", "model")},
        "h",
    )["spec"]["template"]["spec"]
    for volume in rendered["volumes"]:
        manifest = minimal_manifest("PPOJob")
        manifest["spec"]["pod"] = {"volumes": [{"name": volume["name"], "emptyDir": {}}]}
        with pytest.raises(ValueError, match="are the operator's volumes"):
            parse_manifest(manifest)
    for mount in rendered["containers"][0]["volumeMounts"]:
        manifest = minimal_manifest("PPOJob")
        manifest["spec"]["pod"] = {
            "volumes": [{"name": "mine", "emptyDir": {}}],
            "volumeMounts": [{"name": "mine", "mountPath": mount["mountPath"]}],
        }
        with pytest.raises(ValueError, match="are the operator's mounts"):
            parse_manifest(manifest)


def test_rdma_devices_are_requested_with_ipc_lock_added_after_drop_all() -> None:
    spec = {
        "resources": {
            "nodes": 2,
            "gpusPerNode": 8,
            "network": {"devices": {"rdma/rdma_shared_device_a": 1}},
        },
        "output": {"accessModes": ["ReadWriteMany"]},
        "pod": {"annotations": {"k8s.v1.cni.cncf.io/networks": "rdma-net"}},
    }
    template = _pod(spec)
    container = template["spec"]["containers"][0]
    assert container["resources"]["requests"]["rdma/rdma_shared_device_a"] == "1"
    assert container["resources"]["limits"]["rdma/rdma_shared_device_a"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert template["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "rdma-net"
    assert "hostNetwork" not in template["spec"]


def test_ipc_lock_can_be_turned_off_or_on_by_itself() -> None:
    efa = {"resources": {"network": {"devices": {"vpc.amazonaws.com/efa": 4}, "ipcLock": False}}}
    container = _pod(efa)["spec"]["containers"][0]
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "4"
    assert "add" not in container["securityContext"]["capabilities"]
    alone = _pod({"resources": {"network": {"ipcLock": True}}})["spec"]["containers"][0]
    assert alone["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]


def test_nccl_settings_become_environment_variables_before_spec_env() -> None:
    nccl = {
        "debug": "INFO",
        "socketIfname": "^lo,docker",
        "ibHca": "=mlx5_0:1,mlx5_1:1",
        "ibGidIndex": 3,
        "variables": {"NCCL_IB_QPS_PER_CONNECTION": "4", "NCCL_CROSS_NIC": "0"},
    }
    env = _pod(
        {
            "distributed": {"nccl": nccl},
            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        }
    )["spec"]["containers"][0]["env"]
    nccl_env = [(v["name"], v["value"]) for v in env if v["name"].startswith("NCCL_")]
    assert nccl_env == [
        ("NCCL_DEBUG", "INFO"),
        ("NCCL_SOCKET_IFNAME", "^lo,docker"),
        ("NCCL_IB_HCA", "=mlx5_0:1,mlx5_1:1"),
        ("NCCL_IB_GID_INDEX", "3"),
        ("NCCL_CROSS_NIC", "0"),
        ("NCCL_IB_QPS_PER_CONNECTION", "4"),
        ("NCCL_DEBUG", "WARN"),  # spec.env comes last: the kubelet keeps the last one
    ]
    assert not [v for v in _pod({})["spec"]["containers"][0]["env"] if v["name"].startswith("NCCL")]


def test_vendored_kubernetes_schemas_match_kubernetes_validate() -> None:
    """kubernetes_types.json is what `make kubernetes-types` (write_vendored) makes
    from the installed kubernetes-validate (a newer one: `make kubernetes-types crds`)."""
    assert VENDORED.read_text() == render_vendored(build_from_kubernetes_validate())

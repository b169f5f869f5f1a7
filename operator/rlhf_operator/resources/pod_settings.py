"""What ``spec.pod``, ``spec.resources.network`` and ``spec.distributed.nccl`` add to the
training pod template: pure functions of the spec, applied after the operator's own
settings (which the API's rules keep from being overridden)."""

from __future__ import annotations

import copy
from typing import Any

from ..api.job import JobSpec
from ..api.network import Nccl, Network
from ..api.pod import TRAINER_USER_ID, PodSecurity, PodSettings

IPC_LOCK = "IPC_LOCK"


def pod_security_context(security: PodSecurity) -> dict[str, Any]:
    """The pod's securityContext: fixed ids (the image's 1000 unless set), or only those
    set when the platform assigns the rest (OpenShift's restricted-v2 SCC)."""
    default = None if security.assigned_by_platform else TRAINER_USER_ID
    ids = {
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "fsGroup": security.fs_group,
    }
    context: dict[str, Any] = {"runAsNonRoot": True}
    for field, value in ids.items():
        if value is not None or default is not None:
            context[field] = value if value is not None else default
    context["fsGroupChangePolicy"] = security.fs_group_change_policy
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def nccl_environment(nccl: Nccl) -> list[dict[str, str]]:
    """NCCL_* variables from spec.distributed.nccl, in a fixed order."""
    typed = {
        "NCCL_DEBUG": nccl.debug,
        "NCCL_SOCKET_IFNAME": nccl.socket_ifname,
        "NCCL_IB_HCA": nccl.ib_hca,
        "NCCL_IB_GID_INDEX": None if nccl.ib_gid_index is None else str(nccl.ib_gid_index),
    }
    env = [{"name": name, "value": value} for name, value in typed.items() if value is not None]
    env.extend({"name": name, "value": nccl.variables[name]} for name in sorted(nccl.variables))
    return env


def mounts_service_account_token(pod: PodSettings) -> bool:
    """The token follows serviceAccountName (workload identity reads it) unless set."""
    if pod.automount_service_account_token is not None:
        return pod.automount_service_account_token
    return pod.service_account_name is not None


def needs_ipc_lock(network: Network) -> bool:
    return network.ipc_lock if network.ipc_lock is not None else bool(network.devices)


def customise(template: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The pod template with the rest of the spec's pod settings (service account, pull
    secrets, scheduler, placement, volumes, labels, annotations) and network devices."""
    pod = spec.pod
    network = spec.resources.network
    template = copy.deepcopy(template)
    metadata = template["metadata"]
    metadata["labels"] = {**pod.labels, **metadata["labels"]}
    metadata["annotations"] = {**pod.annotations, **metadata.get("annotations", {})}
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    if pod.service_account_name:
        pod_spec["serviceAccountName"] = pod.service_account_name
    if pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [secret.to_manifest() for secret in pod.image_pull_secrets]
    if pod.scheduler_name:
        pod_spec["schedulerName"] = pod.scheduler_name
    if pod.affinity is not None:
        pod_spec["affinity"] = copy.deepcopy(pod.affinity)
    if pod.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = copy.deepcopy(pod.topology_spread_constraints)
    pod_spec["volumes"] = [*pod_spec["volumes"], *copy.deepcopy(pod.volumes)]
    container["volumeMounts"] = [*container["volumeMounts"], *copy.deepcopy(pod.volume_mounts)]
    if network.devices:
        resources = container.setdefault("resources", {})
        for part in ("requests", "limits"):
            amounts = resources.setdefault(part, {})
            amounts.update({name: str(count) for name, count in sorted(network.devices.items())})
    if needs_ipc_lock(network):
        container["securityContext"]["capabilities"]["add"] = [IPC_LOCK]
    return template

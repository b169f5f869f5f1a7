"""``spec.pod``: the settings of the training pods a cluster needs and the operator does not
decide (as Kubeflow Trainer's podTemplateOverrides and KubeRay's pod templates): image pull
secrets, service account, placement, scheduler, extra volumes, labels and annotations, and
the user and group ids. Everything the operator sets itself (its volumes, mounts, labels,
the hardening of the container) stays the operator's: the rules below refuse overrides,
naming the field."""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import Field

from .base import ApiModel, Rule
from .common import ObjectName
from .kubernetes_types import KubernetesType, structural_schemas

# Kubernetes' qualified name (label and annotation keys): an optional DNS subdomain prefix
# of at most 253 characters and a slash, then a name of at most 63.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_PREFIX = 253

LabelValue = Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)]
AnnotationValue = Annotated[str, Field(max_length=4096)]

OPERATOR_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "job-name",
    "controller-uid",
)
"""Pod labels the operator or the Job controller sets (besides the prefixes below)."""
OPERATOR_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
OPERATOR_PREFIXES = ("rlhf.dev/", "batch.kubernetes.io/", "kueue.x-k8s.io/")
"""Label and annotation prefixes of the operator, the Job controller and Kueue (set
Kueue's queue with spec.queueName)."""

OPERATOR_VOLUMES = ("config", "output", "tmp", "cache", "dshm", "model-cache")
OPERATOR_VOLUME_PREFIX = "input-"
OPERATOR_MOUNT_FOLDERS = ("/etc/rlhf", "/output", "/inputs", "/dev/shm", "/model-cache")
"""The operator's mounts: nothing may be mounted on, under or above them."""
OPERATOR_MOUNT_POINTS = ("/tmp", "/cache")
"""The operator's writable scratch mounts: nothing may be mounted on or above them (a
mount below, e.g. a model cache at /cache/models, is fine)."""

TRAINER_USER_ID = 1000
"""The trainer image's user (and group): the ids a pod gets unless told otherwise."""


def _quoted(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def _keys_are_qualified(field: str) -> Rule:
    return Rule(
        cel=(
            f"!has(self.{field}) || self.{field}.all(key, key.matches(r'{QUALIFIED_NAME_PATTERN}')"
            f" && (!key.contains('/') || key.split('/')[0].size() <= {MAX_PREFIX}))"
        ),
        check=lambda pod: all(_is_qualified_name(key) for key in getattr(pod, field)),
        message=(
            f"{field}: keys must be qualified names: an optional DNS subdomain prefix and '/',"
            " then at most 63 letters, digits, '-', '_' or '.', starting and ending with a"
            " letter or digit"
        ),
        field=field,
    )


def _is_qualified_name(key: str) -> bool:
    return bool(re.match(QUALIFIED_NAME_PATTERN, key)) and len(key.split("/")[0]) <= MAX_PREFIX


def _operator_key(key: str, exact: tuple[str, ...]) -> bool:
    return key in exact or key.startswith(OPERATOR_PREFIXES)


def _keys_are_not_the_operators(field: str, exact: tuple[str, ...]) -> Rule:
    prefixes = " || ".join(f"key.startsWith('{prefix}')" for prefix in OPERATOR_PREFIXES)
    return Rule(
        cel=(
            f"!has(self.{field})"
            f" || !self.{field}.exists(key, key in {_quoted(exact)} || {prefixes})"
        ),
        check=lambda pod: not any(_operator_key(key, exact) for key in getattr(pod, field)),
        message=(
            f"{field}: {', '.join(exact)} and keys under {', '.join(OPERATOR_PREFIXES)} are set"
            " by the operator, the Job controller or Kueue (use spec.queueName) and cannot be"
            " overridden"
        ),
        field=field,
    )


def _is_operator_volume(name: str) -> bool:
    return name in OPERATOR_VOLUMES or name.startswith(OPERATOR_VOLUME_PREFIX)


def _clashes_with_operator_mount(path: str) -> bool:
    for folder in OPERATOR_MOUNT_FOLDERS:
        if path == folder or path.startswith(folder + "/") or folder.startswith(path + "/"):
            return True
    return any(path == point or point.startswith(path + "/") for point in OPERATOR_MOUNT_POINTS)


def _is_clean_absolute_path(path: str) -> bool:
    return (
        bool(re.match(r"^(/[^/]+)+$", path))
        and posixpath.normpath(path) == path
        and ".." not in path.split("/")
    )


def _names(items: list[dict[str, Any]], key: str) -> list[Any]:
    return [item.get(key) for item in items]


def _unique_within(field: str, attribute: str, key: str, message: str) -> Rule:
    """No two items of the list ``field`` (``attribute`` of the model) share ``key``."""
    return Rule(
        cel=(
            f"!has(self.{field})"
            f" || self.{field}.all(a, self.{field}.filter(b, b.{key} == a.{key}).size() == 1)"
        ),
        check=lambda pod: (
            len(set(_names(getattr(pod, attribute), key))) == len(getattr(pod, attribute))
        ),
        message=message,
        field=field,
    )


VOLUME_NAMES_UNIQUE = _unique_within(
    "volumes", "volumes", "name", "volumes: each volume needs its own name"
)
VOLUMES_ARE_NOT_THE_OPERATORS = Rule(
    cel=(
        f"!has(self.volumes) || !self.volumes.exists(v, v.name in {_quoted(OPERATOR_VOLUMES)}"
        f" || v.name.startsWith('{OPERATOR_VOLUME_PREFIX}'))"
    ),
    check=lambda pod: not any(_is_operator_volume(name) for name in _names(pod.volumes, "name")),
    message=(
        f"volumes: the names {', '.join(OPERATOR_VOLUMES)} and {OPERATOR_VOLUME_PREFIX}* are the"
        " operator's volumes; name yours otherwise"
    ),
    field="volumes",
)
VOLUME_SOURCES = tuple(sorted(set(structural_schemas()["Volume"]["properties"]) - {"name"}))
"""emptyDir, persistentVolumeClaim, csi...: a volume has exactly one."""
ONE_SOURCE_PER_VOLUME = Rule(
    cel=(
        "!has(self.volumes) || self.volumes.all(v, ["
        + ", ".join(f"has(v.{source})" for source in VOLUME_SOURCES)
        + "].filter(x, x).size() == 1)"
    ),
    check=lambda pod: all(len(set(volume) - {"name"}) == 1 for volume in pod.volumes),
    message=(
        "volumes: each volume needs exactly one source (emptyDir, persistentVolumeClaim, csi...)"
    ),
    field="volumes",
)
SUB_PATHS_RELATIVE = Rule(
    cel=(
        "!has(self.volumeMounts) || self.volumeMounts.all(m, !has(m.subPath)"
        " || (!m.subPath.startsWith('/') && !m.subPath.split('/').exists(p, p == '..')))"
    ),
    check=lambda pod: all(
        not mount.get("subPath", "").startswith("/")
        and ".." not in mount.get("subPath", "").split("/")
        for mount in pod.volume_mounts
    ),
    message="volumeMounts: subPath must be a relative path with no '..' parts",
    field="volumeMounts",
)
MOUNTS_NAME_A_VOLUME = Rule(
    cel=(
        "!has(self.volumeMounts) || self.volumeMounts.all(m,"
        " has(self.volumes) && self.volumes.exists(v, v.name == m.name))"
    ),
    check=lambda pod: set(_names(pod.volume_mounts, "name")) <= set(_names(pod.volumes, "name")),
    message="volumeMounts: each mount must name one of pod.volumes",
    field="volumeMounts",
)
MOUNT_PATHS_CLEAN = Rule(
    cel=(
        "!has(self.volumeMounts) || self.volumeMounts.all(m, m.mountPath.matches(r'^(/[^/]+)+$')"
        " && !m.mountPath.split('/').exists(part, part == '.' || part == '..'))"
    ),
    check=lambda pod: all(
        _is_clean_absolute_path(path) for path in _names(pod.volume_mounts, "mountPath")
    ),
    message=(
        "volumeMounts: mountPath must be an absolute path with no trailing '/', '.' or '..'"
        " parts, e.g. /datasets"
    ),
    field="volumeMounts",
)
MOUNT_PATHS_UNIQUE = _unique_within(
    "volumeMounts", "volume_mounts", "mountPath", "volumeMounts: each mount needs its own mountPath"
)
MOUNTS_ARE_NOT_THE_OPERATORS = Rule(
    cel=(
        f"!has(self.volumeMounts) || !self.volumeMounts.exists(m,"
        f" {_quoted(OPERATOR_MOUNT_FOLDERS)}.exists(f,"
        " m.mountPath == f || m.mountPath.startsWith(f + '/') || f.startsWith(m.mountPath + '/'))"
        f" || {_quoted(OPERATOR_MOUNT_POINTS)}.exists(p,"
        " m.mountPath == p || p.startsWith(m.mountPath + '/')))"
    ),
    check=lambda pod: (
        not any(
            _clashes_with_operator_mount(path) for path in _names(pod.volume_mounts, "mountPath")
        )
    ),
    message=(
        f"volumeMounts: {', '.join(OPERATOR_MOUNT_FOLDERS + OPERATOR_MOUNT_POINTS)} are the"
        " operator's mounts: nothing may be mounted on or above them, nor under"
        f" {', '.join(OPERATOR_MOUNT_FOLDERS)} (under {' or '.join(OPERATOR_MOUNT_POINTS)}"
        " is fine, e.g. /cache/models)"
    ),
    field="volumeMounts",
)
PULL_SECRETS_ONCE_EACH = Rule(
    cel=(
        "!has(self.imagePullSecrets) || self.imagePullSecrets.all(s,"
        " self.imagePullSecrets.filter(t, t.name == s.name).size() == 1)"
    ),
    check=lambda pod: (
        len({secret.name for secret in pod.image_pull_secrets}) == len(pod.image_pull_secrets)
    ),
    message="imagePullSecrets: name each Secret once",
    field="imagePullSecrets",
)
TOKEN_NEEDS_AN_ACCOUNT = Rule(
    cel="!has(self.automountServiceAccountToken) || !self.automountServiceAccountToken"
    " || has(self.serviceAccountName)",
    check=lambda pod: (
        not pod.automount_service_account_token or pod.service_account_name is not None
    ),
    message=(
        "automountServiceAccountToken: mounts the token of serviceAccountName; set it too"
        " (the namespace's default account gets no token)"
    ),
    field="automountServiceAccountToken",
)


class LocalObjectReference(ApiModel):
    """A Secret in the job's namespace, by name (core/v1 LocalObjectReference)."""

    name: ObjectName
    """Name of the Secret."""


ID = Annotated[int, Field(ge=0, le=2147483647)]


class PodSecurity(ApiModel):
    """The user and group ids of the training pods. The rest of the hardening is fixed:
    non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
    read-only root filesystem."""

    rules = (
        Rule(
            cel="!has(self.runAsUser) || self.runAsUser > 0",
            check=lambda security: security.run_as_user is None or security.run_as_user > 0,
            message="runAsUser: the trainer runs as non-root; 0 is root",
            field="runAsUser",
        ),
    )

    assigned_by_platform: bool = False
    """false (the default): the pods run as uid, gid and fsGroup 1000 (the trainer image's
    user) unless set below. true: the pods set no runAsUser, runAsGroup or fsGroup but
    those below, and the namespace's policy assigns them: what an OpenShift namespace
    under the restricted-v2 SCC needs (its uid range differs per namespace; the image runs
    under any uid with gid 0)."""
    run_as_user: ID | None = None
    """User id of the trainer's processes (not 0)."""
    run_as_group: ID | None = None
    """Primary group id of the trainer's processes."""
    fs_group: ID | None = None
    """Group that owns the volumes that support ownership management (the output claim,
    emptyDirs) and that the processes join."""
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] = "OnRootMismatch"
    """OnRootMismatch changes a volume's ownership only when its root does not match the
    fsGroup already (fast on a large output claim that is resumed); Always walks the
    whole volume at every start."""


class PodSettings(ApiModel):
    """Settings of the training pods for the cluster they run on. The operator's own
    volumes, mounts, labels and container hardening cannot be overridden."""

    rules = (
        _keys_are_qualified("labels"),
        _keys_are_not_the_operators("labels", OPERATOR_LABELS),
        _keys_are_qualified("annotations"),
        _keys_are_not_the_operators("annotations", OPERATOR_ANNOTATIONS),
        PULL_SECRETS_ONCE_EACH,
        TOKEN_NEEDS_AN_ACCOUNT,
        VOLUME_NAMES_UNIQUE,
        VOLUMES_ARE_NOT_THE_OPERATORS,
        ONE_SOURCE_PER_VOLUME,
        MOUNTS_NAME_A_VOLUME,
        SUB_PATHS_RELATIVE,
        MOUNT_PATHS_CLEAN,
        MOUNT_PATHS_UNIQUE,
        MOUNTS_ARE_NOT_THE_OPERATORS,
    )

    labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=32)
    """Extra labels on the training pods, e.g. for cost allocation or a NetworkPolicy."""
    annotations: dict[str, AnnotationValue] = Field(default_factory=dict, max_length=32)
    """Extra annotations on the training pods, e.g. sidecar.istio.io/inject: "false" (a
    mesh sidecar that never exits keeps a Job from completing) or a Multus
    k8s.v1.cni.cncf.io/networks attachment for RDMA."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    """Secrets (kubernetes.io/dockerconfigjson) for pulling the trainer image from a
    private registry."""
    service_account_name: ObjectName | None = None
    """ServiceAccount the pods run as, e.g. one bound to a cloud identity (GKE Workload
    Identity, EKS IRSA or Pod Identity, Azure Workload Identity) for reading buckets. The
    namespace's default account when unset."""
    automount_service_account_token: bool | None = None
    """Mount the ServiceAccount's API token into the pods: follows serviceAccountName (true
    when it is set, for workload identity; false otherwise: the trainer needs no API
    access)."""
    scheduler_name: ObjectName | None = None
    """Scheduler of the pods, e.g. a gang scheduler (volcano, scheduler-plugins'
    coscheduling); the default scheduler when unset."""
    affinity: Annotated[dict[str, Any], KubernetesType("Affinity")] | None = None
    """Node affinity and pod (anti-)affinity, as in a pod (core/v1 Affinity; see `kubectl
    explain pod.spec.affinity`), e.g. to keep a multi-node job in one network block."""
    topology_spread_constraints: list[
        Annotated[dict[str, Any], KubernetesType("TopologySpreadConstraint")]
    ] = Field(default_factory=list, max_length=8)
    """How the pods spread over zones or nodes (core/v1 TopologySpreadConstraint)."""
    volumes: list[Annotated[dict[str, Any], KubernetesType("Volume")]] = Field(
        default_factory=list, max_length=16
    )
    """Extra volumes (core/v1 Volume), e.g. a CSI bucket of datasets or a claim of
    pre-downloaded models; mount them with volumeMounts."""
    volume_mounts: list[Annotated[dict[str, Any], KubernetesType("VolumeMount")]] = Field(
        default_factory=list, max_length=16
    )
    """Mounts of the extra volumes into the trainer container (core/v1 VolumeMount)."""
    security_context: PodSecurity = Field(default_factory=PodSecurity)
    """User, group and fsGroup ids (e.g. for OpenShift's restricted-v2)."""

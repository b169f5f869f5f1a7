"""High-speed networking for multi-node training: the RDMA devices a pod requests
(``spec.resources.network``) and the NCCL settings of its processes
(``spec.distributed.nccl``). See docs/networking.md."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, Rule

# An extended resource: a domain-prefixed name (devices are never cpu, memory...).
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
NCCL_VARIABLE_PATTERN = r"^NCCL_[A-Z0-9_]+$"
# Interface and HCA lists as NCCL reads them: an optional ^ (exclude) or = (exact match),
# then comma-separated names, an HCA with an optional :port.
NCCL_LIST_PATTERN = r"^[\^=]?[A-Za-z0-9_.@-]+(:[0-9]+)?(,[A-Za-z0-9_.@-]+(:[0-9]+)?)*$"

NCCL_TYPED_VARIABLES = ("NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "NCCL_IB_GID_INDEX")


class Network(ApiModel):
    """Devices for GPU-to-GPU traffic between nodes, from the cluster's device plugins:
    InfiniBand or RoCE through the NVIDIA network operator (e.g. rdma/rdma_shared_device_a,
    nvidia.com/hostdev), AWS EFA (vpc.amazonaws.com/efa)."""

    rules = (
        Rule(
            cel=(
                "!has(self.devices)"
                f" || self.devices.all(name, name.matches(r'{EXTENDED_RESOURCE_PATTERN}'))"
            ),
            check=lambda network: all(
                re.match(EXTENDED_RESOURCE_PATTERN, name) for name in network.devices
            ),
            message=(
                "devices: keys are extended resource names with a domain, e.g. rdma/ib or"
                " vpc.amazonaws.com/efa"
            ),
            field="devices",
        ),
    )

    devices: dict[str, Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=dict, max_length=8
    )
    """Extended resources each pod requests (and is limited to), by name, e.g.
    {"rdma/rdma_shared_device_a": 1} or {"vpc.amazonaws.com/efa": 32}. GPUs go in
    gpusPerNode."""
    ipc_lock: bool | None = None
    """Add the IPC_LOCK capability to the trainer (after dropping all others): RDMA pins
    the memory it registers. Follows devices when unset (true when any is requested).
    Pod Security admits added capabilities only at the privileged level."""


class Nccl(ApiModel):
    """NCCL settings of the training processes, set as their NCCL_* environment
    variables (spec.env comes after them and wins)."""

    rules = (
        Rule(
            cel=(
                "!has(self.variables)"
                f" || self.variables.all(name, name.matches(r'{NCCL_VARIABLE_PATTERN}')"
                f" && !(name in {list(NCCL_TYPED_VARIABLES)}))"
            ),
            check=lambda nccl: all(
                re.match(NCCL_VARIABLE_PATTERN, name) and name not in NCCL_TYPED_VARIABLES
                for name in nccl.variables
            ),
            message=(
                "variables: names are NCCL_ and capitals, digits or '_'; NCCL_DEBUG,"
                " NCCL_SOCKET_IFNAME, NCCL_IB_HCA and NCCL_IB_GID_INDEX have their own fields"
            ),
            field="variables",
        ),
    )

    debug: Literal["VERSION", "WARN", "INFO", "TRACE"] | None = None
    """NCCL_DEBUG: INFO logs the transport each rank uses (NET/IB, NET/OFI or NET/Socket),
    the first thing to check on a new cluster."""
    socket_ifname: Annotated[str, Field(pattern=NCCL_LIST_PATTERN, max_length=256)] | None = None
    """NCCL_SOCKET_IFNAME: interfaces for bootstrap and socket traffic, e.g. "eth0",
    "^lo,docker" (all but those) or "=net1" (exactly)."""
    ib_hca: Annotated[str, Field(pattern=NCCL_LIST_PATTERN, max_length=256)] | None = None
    """NCCL_IB_HCA: the InfiniBand/RoCE adapters to use, e.g. "mlx5" (every mlx5_*) or
    "=mlx5_0:1,mlx5_1:1"."""
    ib_gid_index: Annotated[int, Field(ge=0, le=255)] | None = None
    """NCCL_IB_GID_INDEX: the GID of RoCE (often 3, RoCE v2 over IPv4)."""
    variables: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )
    """Other NCCL_* variables, e.g. {"NCCL_IB_QPS_PER_CONNECTION": "4"}."""


DEVICES_ARE_NOT_THE_GPUS = Rule(
    cel=(
        "!has(self.network) || !has(self.network.devices)"
        " || !(self.gpuResourceName in self.network.devices)"
    ),
    check=lambda resources: resources.gpu_resource_name not in resources.network.devices,
    message="network.devices: request GPUs with gpusPerNode (and gpuResourceName)",
    field="network.devices",
)
"""A rule of Resources: GPUs are counted by gpusPerNode, which decides the processes."""

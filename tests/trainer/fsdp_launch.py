"""``python tests/trainer/fsdp_launch.py sft --config PATH``: the trainer, FSDP2 on CPU too.

torch 2.15's FSDP2 (``fully_shard``) runs on CPU with the gloo backend, but accelerate
1.15 turns an FSDP plugin on only for GPU-like devices: ``AcceleratorState.__init__``
sets ``DistributedType.FSDP`` in its MULTI_GPU/MLU/NPU/XPU/... branch and never for
MULTI_CPU, so on CPU the plugin is silently dropped and the Trainer runs plain DDP. When
no GPU is visible this launcher lifts that one gate (nothing else is changed) so the tests
exercise the real FSDP2 path: sharded training, collective checkpoint and model gathering.
On a GPU machine it changes nothing (bench/gpu_throughput.py --distributed-check).

With ``RLHF_TEST_SHARDS=DIR`` each process also writes its own shards of the trained
weights (``DTensor.to_local()``, no collective) to ``DIR/rank-<r>.pt`` just before the
model is gathered for publishing: the test rebuilds the trained weights from them and
compares them with the published model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def _enable_fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None:
            self.fsdp_plugin = fsdp_plugin
        # Every later AcceleratorState() copies PartialState's MULTI_CPU back in: re-apply.
        if (
            getattr(self, "fsdp_plugin", None) is not None
            and self.distributed_type == DistributedType.MULTI_CPU
        ):
            self.distributed_type = DistributedType.FSDP

    AcceleratorState.__init__ = init


def _dump_shards_before_publishing(folder: Path) -> None:
    import torch
    from rlhf_trainer import hf
    from torch.distributed.tensor import DTensor

    original = hf.trained_model

    def trained_model(context: Any, trainer: Any, **kwargs: Any) -> Any:
        shards = {}
        for name, parameter in trainer.model.named_parameters():
            assert isinstance(parameter, DTensor), f"{name} is not sharded"
            shards[name] = parameter.to_local().detach().cpu().clone()
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(shards, folder / f"rank-{context.rank}.pt")
        return original(context, trainer, **kwargs)

    hf.trained_model = trained_model


def trained_weights(folder: Path, world_size: int) -> dict[str, Any]:
    """The trained weights rebuilt from the processes' own shards (FSDP2 shards dim 0)."""
    import torch

    ranks = [torch.load(folder / f"rank-{rank}.pt") for rank in range(world_size)]
    assert all(rank.keys() == ranks[0].keys() for rank in ranks)
    return {name: torch.cat([rank[name] for rank in ranks]) for name in ranks[0]}


if __name__ == "__main__":
    import torch

    if not torch.cuda.is_available():
        _enable_fsdp_on_cpu()
    if os.environ.get("RLHF_TEST_SHARDS"):
        _dump_shards_before_publishing(Path(os.environ["RLHF_TEST_SHARDS"]))
    from rlhf_trainer.__main__ import main

    sys.exit(main())

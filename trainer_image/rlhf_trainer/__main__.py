"""``python -m rlhf_trainer {sft,rm,ppo} --config PATH`` (also the ``rlhf-trainer`` command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rlhf_operator.api.trainer_config import CONFIG_PATH


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf-trainer", description="Train one stage of an RLHF pipeline."
    )
    parser.add_argument("stage", choices=("sft", "rm", "ppo"), help="the stage to run")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(CONFIG_PATH),
        help=f"config JSON (default {CONFIG_PATH})",
    )
    arguments = parser.parse_args(argv)
    from .lifecycle import run_stage

    if arguments.stage == "sft":
        from .sft import train
    elif arguments.stage == "rm":
        from .reward import train
    else:
        from .ppo import train
    return run_stage(arguments.stage, arguments.config, train)


if __name__ == "__main__":
    sys.exit(main())

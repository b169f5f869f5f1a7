"""A worker for the launcher tests (tests/trainer/test_launch.py), started by torchrun.

WORKER_FAIL_RANK / WORKER_FAIL_CODE: that rank exits with that code once every rank is up;
the others wait to be stopped. WORKER_CHECKPOINT_SECONDS: on SIGTERM, take this long to
"write a checkpoint" (a file per rank, written when done), then exit 143 as the trainer
does. Each rank says it is up with a file in WORKER_FOLDER.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

FOLDER = Path(os.environ["WORKER_FOLDER"])
RANK = int(os.environ["RANK"])


def _checkpoint_and_stop(signum: int, frame: object) -> None:
    time.sleep(float(os.environ.get("WORKER_CHECKPOINT_SECONDS", "0")))
    (FOLDER / f"checkpoint-{RANK}").write_text("complete")
    sys.exit(143)


def main() -> int:
    signal.signal(signal.SIGTERM, _checkpoint_and_stop)
    (FOLDER / f"up-{RANK}").touch()
    world = int(os.environ["WORLD_SIZE"])
    while len(list(FOLDER.glob("up-*"))) < world:
        time.sleep(0.05)
    if os.environ.get("WORKER_FAIL_RANK") == str(RANK):
        return int(os.environ["WORKER_FAIL_CODE"])
    time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())

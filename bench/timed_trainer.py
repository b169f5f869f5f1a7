"""``python bench/timed_trainer.py {sft,rm,dpo,ppo} --config PATH``: exactly
``python -m rlhf_trainer ...``, plus the wall time of the training call itself.

It wraps ``transformers.Trainer.train`` (SFT, reward model, DPO: DPOTrainer is a Trainer) and
``rlhf_trainer.ppo_core.PPOLoop.train`` (PPO) with a timer and writes
``{"train_seconds": ..., "process_started": ...}`` to ``$BENCH_TIMING_FILE`` when the
process ends. Nothing else changes: the trainer code runs unmodified.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import runpy
import sys
import time

STARTED = time.time()
TIMINGS: dict[str, float] = {"process_started": STARTED}


def _timed(function, key):  # type: ignore[no-untyped-def]
    @functools.wraps(function)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        TIMINGS[key + "_began"] = time.time() - STARTED
        try:
            return function(*args, **kwargs)
        finally:
            TIMINGS[key] = TIMINGS.get(key, 0.0) + time.perf_counter() - began

    return wrapper


def _write() -> None:
    path = os.environ.get("BENCH_TIMING_FILE")
    if path:
        TIMINGS["process_seconds_inside"] = time.time() - STARTED
        with open(path, "w") as handle:
            json.dump(TIMINGS, handle)


def main() -> None:
    atexit.register(_write)
    stage = sys.argv[1] if len(sys.argv) > 1 else ""
    if stage in ("sft", "rm", "dpo"):
        import transformers

        transformers.Trainer.train = _timed(transformers.Trainer.train, "train_seconds")
    elif stage == "ppo":
        from rlhf_trainer import ppo_core

        ppo_core.PPOLoop.train = _timed(ppo_core.PPOLoop.train, "train_seconds")
        ppo_core.PPOLoop.evaluate = _timed(ppo_core.PPOLoop.evaluate, "evaluate_seconds")
    sys.argv = ["rlhf_trainer", *sys.argv[1:]]
    try:
        runpy.run_module("rlhf_trainer", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        _write()
        raise done


if __name__ == "__main__":
    main()

"""``python -m rlhf_trainer.launch [torchrun options] -m rlhf_trainer STAGE ...``: torchrun
that keeps the trainer's exit code and its checkpoint window.

Bare torchrun (torch 2.15, ``torch.distributed.run``) has two habits a Kubernetes Job
cannot live with:

* when a worker fails, the elastic agent raises ``ChildFailedError`` (its ``failures`` hold
  each failed rank's ``ProcessFailure.exitcode``) and ``torchrun``'s ``@record`` main turns
  that into exit code 1, so the Job's ``podFailurePolicy`` never sees the trainer's 65 (bad
  data) or 78 (bad config) and retries a job that cannot succeed;
* on SIGTERM the agent raises ``SignalException``, forwards the signal to its workers and,
  ``shutdown_timeout`` seconds later (``--shutdown-timeout``, else the environment's
  ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, else 30), SIGKILLs them, though the pod's grace period
  (``resources/job.py`` ``GRACE_SECONDS``) leaves the trainer longer to write a checkpoint.

This module runs the same launcher in-process (``torch.distributed.run.run``, the parser and
agent torchrun itself uses) and maps its outcome to an exit code (``exit_code``): a user
error (65/78) from any rank wins, else the first failing rank's code (a worker killed by a
signal reads as 128 + the signal, as a shell reports it); a launcher stopped by a signal
exits 128 + that signal (143 for SIGTERM, the trainer's own code for a stop after a
checkpoint). The operator passes ``--shutdown-timeout`` (the grace period less a margin);
without it this module uses ``RLHF_SHUTDOWN_TIMEOUT_SECONDS`` or ``DEFAULT_SHUTDOWN_SECONDS``.
torch has had ``LaunchConfig.shutdown_timeout`` (and torchrun's ``--shutdown-timeout``)
only since 2.12; the default CUDA base image has 2.9, whose agent closes its workers with
``PContext.close(death_sig)`` and that method's 30 s default: there this module takes the
option itself (``with_shutdown_timeout``) and makes the timeout that method's default
(``_set_shutdown_timeout``), so the same command works on either.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import USER_ERROR_EXIT_CODES

DEFAULT_SHUTDOWN_SECONDS = 110
"""The workers' time to checkpoint after SIGTERM when no timeout is given: the operator's
120 s grace period less 10 s for the launcher to collect them and exit."""
SHUTDOWN_ENVIRONMENT = "RLHF_SHUTDOWN_TIMEOUT_SECONDS"
GENERIC_FAILURE = 1
STOPPED_BY_SIGTERM = 128 + signal.SIGTERM


def exit_code(failures: Mapping[int, Any]) -> int:
    """The container's exit code for the failed ranks of one launch.

    ``failures``: global rank -> ``ProcessFailure`` (``exitcode``, ``timestamp``), as in
    ``ChildFailedError.failures``. A user error (65/78) on any rank; else the earliest
    failure (ties: the lowest rank) that is not a stop on SIGTERM (143: the agent stops the
    other workers once one fails, and they may be collected with it, in the same second);
    else the earliest. A negative exit code (killed by a signal) reads as 128 + the signal.
    """
    ordered = sorted(failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    codes = [_shell_code(failure.exitcode) for _, failure in ordered]
    for code in codes:
        if code in USER_ERROR_EXIT_CODES:
            return code
    for code in codes:
        if code not in (0, STOPPED_BY_SIGTERM):
            return code
    return codes[0] if codes and codes[0] else GENERIC_FAILURE


def _shell_code(code: int) -> int:
    return 128 - code if code < 0 else code


def shutdown_seconds(environment: Mapping[str, str]) -> int:
    """The shutdown timeout when the command line gives none."""
    value = environment.get(SHUTDOWN_ENVIRONMENT, "").strip()
    return int(value) if value.isdigit() else DEFAULT_SHUTDOWN_SECONDS


def with_shutdown_timeout(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """torchrun's parser, given ``--shutdown-timeout`` where its torch lacks it (< 2.12)."""
    try:
        parser.add_argument("--shutdown-timeout", "--shutdown_timeout", type=int, default=None)
    except argparse.ArgumentError:  # torch's own (2.12 and later)
        pass
    return parser


def _set_shutdown_timeout(arguments: Any, seconds: int) -> None:
    """Give the workers ``seconds`` to stop after a signal, on any torch 2."""
    import dataclasses

    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.launcher.api import LaunchConfig

    if "shutdown_timeout" in {field.name for field in dataclasses.fields(LaunchConfig)}:
        arguments.shutdown_timeout = seconds  # torch >= 2.12: the agent passes it on
        return
    close = api.PContext.close

    def close_waiting_longer(
        self: Any, death_sig: signal.Signals | None = None, timeout: int = seconds
    ) -> None:
        close(self, death_sig, timeout)

    api.PContext.close = close_waiting_longer  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    parser = with_shutdown_timeout(get_args_parser())
    arguments = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    seconds = arguments.shutdown_timeout
    _set_shutdown_timeout(arguments, shutdown_seconds(os.environ) if seconds is None else seconds)
    try:
        run(arguments)  # type: ignore[no-untyped-call]
    except ChildFailedError as error:
        code = exit_code(error.failures)
        ranks = ", ".join(
            f"rank {rank}: {_shell_code(failure.exitcode)}"
            for rank, failure in sorted(error.failures.items())
        )
        print(
            f"rlhf-trainer.launch: workers failed ({ranks}); exiting with {code}",
            file=sys.stderr,
            flush=True,
        )
        return code
    except SignalException as error:
        print(
            f"rlhf-trainer.launch: {signal.Signals(error.sigval).name}: workers stopped",
            file=sys.stderr,
            flush=True,
        )
        return 128 + int(error.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
"""

from __future__ import annotations

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


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    arguments = parse_args(list(sys.argv[1:] if argv is None else argv))  # type: ignore[no-untyped-call]
    if arguments.shutdown_timeout is None:
        arguments.shutdown_timeout = shutdown_seconds(os.environ)
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

"""``python bench/operator_with_settings.py --max-workers N operator ...``: the operator
exactly as ``python -m rlhf_operator.cli operator ...``, plus one extra Kopf startup
handler that sets ``settings.execution.max_workers`` (the thread pool Kopf runs our
synchronous handlers in; default min(32, CPUs + 4) = 6 on a 2-core machine).

A bench-only experiment (operator_scale.py --max-workers) to check a suggested fix
without touching the operator's code.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> int:
    arguments = sys.argv[1:]
    workers = None
    if arguments[:1] == ["--max-workers"]:
        workers, arguments = int(arguments[1]), arguments[2:]

    import kopf
    from rlhf_operator import handlers  # noqa: F401  (registers the operator's handlers)
    from rlhf_operator.cli import main as cli_main

    if workers:

        @kopf.on.startup()
        def bench_executor(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.execution.max_workers = workers

    return cli_main(arguments)


if __name__ == "__main__":
    sys.exit(main())

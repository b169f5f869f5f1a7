"""``python bench/operator_with_settings.py --max-workers N operator ...``: the operator
exactly as ``python -m rlhf_operator.cli operator ...``, plus one extra Kopf startup
handler that sets ``settings.execution.max_workers`` (the thread pool Kopf runs our
synchronous handlers in; default min(32, CPUs + 4) = 6 on a 2-core machine).

A bench-only experiment (operator_scale.py --max-workers) to check a suggested fix
without touching the operator's code. ``--tracemalloc FILE`` (first, before
``--max-workers`` if both) traces allocations and writes the biggest live ones to FILE
on SIGUSR1 (operator_scale.py --memory-profile).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def main() -> int:
    arguments = sys.argv[1:]
    workers = None
    if arguments[:1] == ["--max-workers"]:
        workers, arguments = int(arguments[1]), arguments[2:]
    if arguments[:1] == ["--tracemalloc"]:
        trace_memory(Path(arguments[1]))
        arguments = arguments[2:]

    import kopf
    from rlhf_operator import handlers  # noqa: F401  (registers the operator's handlers)
    from rlhf_operator.cli import main as cli_main

    if workers:

        @kopf.on.startup()
        def bench_executor(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.execution.max_workers = workers

    return cli_main(arguments)


def trace_memory(output: Path) -> None:
    """Trace Python allocations; on SIGUSR1 write the live ones, biggest first, to ``output``.

    Grouped by the allocating line with a 6-frame traceback, so an allocation inside
    json or dict code is charged to the operator or Kopf line that asked for it.
    """
    import signal
    import tracemalloc

    tracemalloc.start(6)

    def dump(*_: Any) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        lines = [f"traced: {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB live"]
        for stat in snapshot.statistics("traceback")[:40]:
            lines.append(f"\n{stat.size / 1e6:8.2f} MB {stat.count:8d} blocks")
            lines.extend(f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback)
        output.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)


if __name__ == "__main__":
    sys.exit(main())

"""The ``rlhf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        parser.print_help()
        return 2
    return int(arguments.run(arguments) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Run SFT, reward-model and PPO training as Kubernetes custom resources.",
    )
    parser.add_argument("--version", action="version", version=f"rlhf-operator {__version__}")
    commands = parser.add_subparsers(title="commands")

    crds = commands.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--output", type=Path, default=Path("crds"), help="folder (default: crds)")
    crds.add_argument(
        "--check", action="store_true", help="only check that the folder is up to date"
    )
    crds.set_defaults(run=_crds)

    validate = commands.add_parser(
        "validate", help="check job manifests with the same rules as the apiserver"
    )
    validate.add_argument("files", nargs="+", type=Path, help="YAML files (multi-document)")
    validate.set_defaults(run=_validate)
    return parser


def _crds(arguments: argparse.Namespace) -> int:
    from .crds import stale_crds, write_crds

    if arguments.check:
        stale = stale_crds(arguments.output)
        for path in stale:
            print(f"{path} is out of date: run `rlhf crds` (or `make crds`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_crds(arguments.output):
        print(path)
    return 0


def _validate(arguments: argparse.Namespace) -> int:
    from .api import ManifestError
    from .manifests import load_jobs

    try:
        jobs = load_jobs(arguments.files)
    except ManifestError as error:
        for problem in error.errors:
            print(f"{error.source}: {problem}", file=sys.stderr)
        return 1
    for job in jobs:
        print(f"{job.kind}/{job.metadata.name}: valid")  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())

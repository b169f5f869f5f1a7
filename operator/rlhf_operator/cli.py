"""The ``rlhf`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

EXIT_CODES = """exit codes: 0 done; 1 a stage failed, or the workdir is in use; 2 invalid input
(manifests, files, --claim, --from) or usage; 130 / 143 / 129 stopped by Ctrl-C / SIGTERM /
SIGHUP after a checkpoint (run the same command again to resume)"""
FILES_HELP = "job manifests: YAML files (multi-document), folders of them, or - for stdin"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help, and epilogs kept as written."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "run"):
        parser.print_help()
        return 2
    try:
        return int(arguments.run(arguments) or 0)
    except BrokenPipeError:  # `rlhf render ... | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C before a command counts presses itself (importing)
        print("\nrlhf: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Run SFT, reward-model and PPO training as Kubernetes custom resources.",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rlhf-operator {__version__}")
    commands = parser.add_subparsers(title="commands")

    crds = commands.add_parser(
        "crds", formatter_class=HelpFormatter, help="write the CRDs generated from the API models"
    )
    crds.add_argument("--output", type=Path, default=Path("crds"), help="folder")
    crds.add_argument(
        "--check", action="store_true", help="only check that the folder is up to date"
    )
    crds.set_defaults(run=_crds)

    dashboards = commands.add_parser(
        "dashboards",
        formatter_class=HelpFormatter,
        help="write the Grafana dashboards generated from rlhf_operator/dashboards",
        description="Write the Grafana dashboards' JSON, built with the Grafana Foundation SDK"
        " (pip install 'rlhf-operator[dashboards]').",
    )
    dashboards.add_argument(
        "--output", type=Path, default=Path("helm/rlhf-operator/dashboards"), help="folder"
    )
    dashboards.add_argument(
        "--check", action="store_true", help="only check that the folder is up to date"
    )
    dashboards.set_defaults(run=_dashboards)

    validate = commands.add_parser(
        "validate",
        formatter_class=HelpFormatter,
        help="check job manifests with the same rules as the apiserver",
        epilog=EXIT_CODES,
    )
    validate.add_argument("files", nargs="+", type=Path, help=FILES_HELP)
    validate.set_defaults(run=_validate)

    render = commands.add_parser(
        "render",
        formatter_class=HelpFormatter,
        help="print the trainer config each job's pods get (what its ConfigMap holds)",
        description="Print, for each job, the exact config.json its training pods read at"
        " /etc/rlhf/config.json (a JSON document per job). The trainer reads it with"
        " `python -m rlhf_trainer STAGE --config FILE`; it also takes a job manifest directly.",
        epilog=EXIT_CODES,
    )
    render.add_argument("files", nargs="+", type=Path, help=FILES_HELP)
    render.add_argument(
        "--output", type=Path, default=None, help="write FOLDER/<name>-<stage>.json files instead"
    )
    render.set_defaults(run=_render)

    local = commands.add_parser(
        "local", formatter_class=HelpFormatter, help="run jobs on this machine, no cluster needed"
    )
    local_commands = local.add_subparsers(title="local commands")
    local_run = local_commands.add_parser(
        "run",
        formatter_class=HelpFormatter,
        help="run the jobs in FILEs in dependency order (re-run to resume)",
        epilog=EXIT_CODES,
    )
    local_run.add_argument("files", nargs="+", type=Path, help=FILES_HELP)
    local_run.add_argument("--workdir", type=Path, default=Path("runs/local"), help="run folder")
    local_run.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a local folder standing in for the PersistentVolumeClaim NAME (repeatable)",
    )
    local_run.add_argument(
        "--restart",
        action="store_true",
        help="retrain stages whose spec or inputs changed since their results were made"
        " (without it: refuse, naming what changed)",
    )
    local_run.add_argument(
        "--from",
        dest="start_from",
        action="append",
        default=[],
        metavar="JOB",
        help="retrain JOB (Kind/name, or a name) and every job after it, even if finished"
        " (repeatable)",
    )
    local_run.set_defaults(run=_local_run)
    local_status = local_commands.add_parser(
        "status", formatter_class=HelpFormatter, help="what a run folder holds"
    )
    local_status.add_argument(
        "workdir", type=Path, nargs="?", default=Path("runs/local"), help="run folder"
    )
    local_status.set_defaults(run=_local_status)

    operator = commands.add_parser(
        "operator",
        formatter_class=HelpFormatter,
        help="run the controller (what the Helm chart runs)",
    )
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: RLHF_NAMESPACES, else all)",
    )
    operator.add_argument("--metrics-address", default="0.0.0.0", help="metrics listen address")
    operator.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics")
    operator.add_argument(
        "--health-port", type=int, default=8081, help="port of the liveness endpoint /healthz"
    )
    operator.add_argument(
        "--standalone", action="store_true", help="do not coordinate with other replicas"
    )
    operator.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the highest live replica acts, the others wait"
        " (default: random, so exactly one replica wins)",
    )
    operator.add_argument("--verbose", action="store_true", help="log every event")
    operator.set_defaults(run=_operator)
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


def _dashboards(arguments: argparse.Namespace) -> int:
    try:
        from .dashboards import stale_dashboards, write_dashboards
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("grafana_foundation_sdk"):
            raise
        print(
            "rlhf dashboards needs the Grafana Foundation SDK:"
            " pip install 'rlhf-operator[dashboards]'",
            file=sys.stderr,
        )
        return 2
    if arguments.check:
        stale = stale_dashboards(arguments.output)
        for path in stale:
            print(
                f"{path} is out of date: run `rlhf dashboards` (or `make dashboards`)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in write_dashboards(arguments.output):
        print(path)
    return 0


def _load_or_report(files: list[Path]) -> list[Any] | None:
    """The jobs in the files, or None after printing every problem (exit code 2)."""
    from .api import ManifestError
    from .manifests import load_jobs

    try:
        return load_jobs(files)
    except ManifestError as error:
        report_manifest_error(error)
        return None


def _validate(arguments: argparse.Namespace) -> int:
    jobs = _load_or_report(arguments.files)
    if jobs is None:
        return 2
    for job in jobs:
        print(f"{job.kind}/{job.metadata.name}: valid")  # type: ignore[attr-defined]
    return 0


def report_manifest_error(error: Exception) -> None:
    """Every problem, one line each, naming its file and document."""
    lines = error.lines() if hasattr(error, "lines") else [str(error)]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)


def _render(arguments: argparse.Namespace) -> int:
    import json

    from .render import rendered_configs

    jobs = _load_or_report(arguments.files)
    if jobs is None:
        return 2
    for name, config in rendered_configs(jobs).items():
        text = json.dumps(config, indent=2, sort_keys=True)
        if arguments.output is None:
            print(text)
            continue
        arguments.output.mkdir(parents=True, exist_ok=True)
        (arguments.output / f"{name}.json").write_text(text + "\n")
        print(arguments.output / f"{name}.json")
    return 0


def _local_run(arguments: argparse.Namespace) -> int:
    from .local.commands import run

    claims = {}
    for item in arguments.claim:
        name, _, folder = item.partition("=")
        if not name or not folder:
            print(f"error: --claim {item}: expected NAME=DIR", file=sys.stderr)
            return 2
        claims[name] = Path(folder)
    return run(
        arguments.files,
        arguments.workdir,
        claims,
        restart=arguments.restart,
        start_from=arguments.start_from,
    )


def _local_status(arguments: argparse.Namespace) -> int:
    from .local.commands import status

    return status(arguments.workdir)


def _operator(arguments: argparse.Namespace) -> int:
    import logging
    import random

    import kopf
    from prometheus_client import start_http_server

    from . import handlers
    from .metrics import REGISTRY

    problem = _no_cluster_configuration()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not arguments.verbose:
        # One line per handler run drowns the log at scale; failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = list(arguments.namespace) or list(handlers.SETTINGS.namespaces)
    start_http_server(arguments.metrics_port, addr=arguments.metrics_address, registry=REGISTRY)
    print(
        f"rlhf operator: metrics on {arguments.metrics_address}:{arguments.metrics_port}",
        flush=True,
    )
    # Kopf lets every replica of equal priority act; distinct priorities elect one.
    priority = arguments.priority
    if priority is None and not arguments.standalone:
        priority = random.SystemRandom().randint(1, 2**30)
    kopf.run(
        clusterwide=not namespaces,
        priority=priority,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{arguments.health_port}/healthz",
        # Replicas elect one active operator through Kopf peering (the chart ships its CRDs).
        standalone=arguments.standalone or None,
        peering_name=None if arguments.standalone else "rlhf-operator",
    )
    return 0


def _no_cluster_configuration() -> str | None:
    """Why the operator cannot reach a cluster, before Kopf starts (or None when it can)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
        return None
    except config.ConfigException:
        pass
    try:
        config.load_kube_config()
        return None
    except (config.ConfigException, OSError, TypeError) as error:
        return (
            f"no Kubernetes configuration ({error}): run inside a cluster (the Helm chart does),"
            " or point KUBECONFIG at a kubeconfig file"
        )


if __name__ == "__main__":
    sys.exit(main())

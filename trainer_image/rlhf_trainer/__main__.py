"""``python -m rlhf_trainer {sft,rm,ppo,dpo} --config PATH`` (also the ``rlhf-trainer`` command).

``--config`` is the trainer config a pod gets (``rlhf render`` prints it), or a job
manifest (the YAML you would ``kubectl apply``), as TRL's CLI takes a recipe: its
``pvc`` and ``fromJob`` inputs are then given with ``--input SLOT=PATH`` and the results go
to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf_operator.api.trainer_config import CONFIG_PATH

from .errors import EXIT_CONFIG_ERROR

SLOTS = ("model", "policy", "rewardModel", "valueModel", "dataset")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf-trainer",
        description="Train one stage of an RLHF pipeline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("stage", choices=("sft", "rm", "ppo", "dpo"), help="the stage to run")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(CONFIG_PATH),
        help="trainer config JSON (`rlhf render`), or a job manifest (YAML)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="with a job manifest: results folder (default ./<name>-<stage>)",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="SLOT=PATH",
        help=f"with a job manifest: a local path for a pvc or fromJob source ({', '.join(SLOTS)})",
    )
    arguments = parser.parse_args(argv)
    from .lifecycle import run_stage

    config_path = arguments.config
    manifest = _job_manifest(config_path)
    if manifest is not None:
        try:
            config_path = _config_from_manifest(
                manifest, arguments.stage, arguments.output, arguments.input, config_path
            )
        except ValueError as error:
            print(f"rlhf-trainer: error: {config_path}: {error}", file=sys.stderr, flush=True)
            return EXIT_CONFIG_ERROR

    if arguments.stage == "sft":
        from .sft import train
    elif arguments.stage == "rm":
        from .reward import train
    elif arguments.stage == "dpo":
        from .dpo import train
    else:
        from .ppo import train
    return run_stage(arguments.stage, config_path, train)


def _job_manifest(path: Path) -> dict[str, Any] | None:
    """The file's document when it is a job manifest (not a trainer config), else None."""
    try:
        import yaml

        document = yaml.safe_load(path.read_text())
    except Exception:  # unreadable or not YAML: run_stage reports it as a config error
        return None
    if isinstance(document, dict) and "kind" in document and "job" not in document:
        return document
    return None


def _config_from_manifest(
    manifest: dict[str, Any], stage: str, output: Path | None, given: list[str], source: Path
) -> Path:
    """Render the trainer config for a manifest (as local mode does) and write it next to
    the results; raises ValueError with a message a user can act on."""
    from rlhf_operator.api import ManifestError, kind_info, parse_manifest
    from rlhf_operator.inputs import inputs, trainer_config

    try:
        job = parse_manifest(manifest, str(source))
    except ManifestError as error:
        raise ValueError("; ".join(str(problem) for problem in error.errors)) from None
    if kind_info(job).stage != stage:
        raise ValueError(f"stage {stage} cannot run a {job.kind}")  # type: ignore[attr-defined]
    paths: dict[str, str] = {}
    for item in given:
        slot, _, path = item.partition("=")
        if slot not in SLOTS or not path:
            raise ValueError(f"--input {item}: expected SLOT=PATH with SLOT one of {SLOTS}")
        paths[slot] = str(Path(path).resolve())
    missing = [needed.slot for needed in inputs(job) if needed.slot not in paths]
    if missing:
        raise ValueError(
            f"spec.{missing[0]} is stored on a claim or an earlier job's output;"
            f" give its local path with --input {missing[0]}=PATH"
        )
    folder = (output or Path(f"{job.metadata.name}-{stage}")).resolve()
    config = trainer_config(
        job,
        input_paths=paths,  # type: ignore[arg-type]
        output=str(folder),
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(config.to_manifest(), indent=2))
    return path


if __name__ == "__main__":
    sys.exit(main())

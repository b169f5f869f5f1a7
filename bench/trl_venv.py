"""The TRL 1.12 virtualenv the PPO comparison runs TRL's PPOTrainer in.

TRL dropped PPO after 1.12.0 (``trl.experimental.ppo``); our project pins trl >= 1.16, so
TRL's PPO runs in its own virtualenv, made once under
``$RLHF_CACHE/bench/trl-1.12-venv`` (default ``~/.cache/rlhf-operator/bench``):

* a plain venv (no ``--system-site-packages``) from the same base interpreter as ours;
* torch: by default the *same* torch build as ours, hard-linked (copied if links fail)
  file by file from our venv together with its dependency closure (nvidia-*, triton,
  sympy...), dist-info included, so pip sees it installed. This saves a multi-GB CUDA
  wheel download and keeps the comparison on identical kernels. ``--torch-from-pypi``
  installs the same torch version from PyPI instead (uses the pip cache);
* ``pip install trl==1.12.0`` with a constraints file pinning every package our venv also
  has (transformers, accelerate, datasets, tokenizers, numpy...) to our versions; trl
  1.12.0 requires accelerate>=1.4.0, datasets>=4.7.0, transformers>=4.56.2, which ours
  satisfy. pip's cache (``$PIP_CACHE_DIR``, default ``~/.cache/pip``) is reused.

    .venv/bin/python bench/trl_venv.py            # make (or check) it; prints its versions
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import common

TRL_VERSION = "1.12.0"
# Packages never pinned from our venv: TRL itself, our own package, pip's tooling.
NOT_PINNED = {"trl", "rlhf-operator", "pip", "setuptools", "wheel"}


def venv_dir() -> Path:
    return common.cache_root() / f"trl-{TRL_VERSION.rsplit('.', 1)[0]}-venv"


def venv_python(folder: Path | None = None) -> Path:
    return (folder or venv_dir()) / "bin" / "python"


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def dependency_closure(root: str) -> list[metadata.Distribution]:
    """``root`` and every distribution it needs in this environment (extras followed)."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (_key(name), extras) in done:
            continue
        done.add((_key(name), extras))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[_key(name)] = distribution
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)
            ):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return list(found.values())


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def link_distributions(distributions: list[metadata.Distribution], target: Path) -> int:
    """Hard-link (or copy) every file of the distributions under site-packages into
    ``target`` (another venv's site-packages). Files outside site-packages (console
    scripts) are skipped. Returns the number of files placed."""
    source = Path(sysconfig.get_paths()["purelib"]).resolve()
    placed = 0
    for distribution in distributions:
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file)).resolve()
            try:
                relative = path.relative_to(source)
            except ValueError:
                continue  # ../../bin/... scripts: not needed
            if not path.is_file():
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.exists():
                continue
            try:
                os.link(path, destination)
            except OSError:
                shutil.copy2(path, destination)
            placed += 1
    return placed


def constraints() -> str:
    """``name==version`` for every distribution here but NOT_PINNED."""
    lines = []
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if not name or _key(name) in NOT_PINNED:
            continue
        lines.append(f"{name}=={distribution.version}")
    return "\n".join(sorted(set(lines), key=str.lower)) + "\n"


def describe(python: Path) -> dict[str, str]:
    code = (
        "import json, sys, torch, transformers, accelerate, datasets, trl;"
        "from trl.experimental.ppo import PPOConfig, PPOTrainer;"
        "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,"
        " 'transformers': transformers.__version__, 'accelerate': accelerate.__version__,"
        " 'datasets': datasets.__version__, 'trl': trl.__version__,"
        " 'torch_file': torch.__file__}))"
    )
    out = subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=common.offline_env(),
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def ensure(torch_from_pypi: bool = False, quiet: bool = False) -> tuple[Path, dict[str, str]]:
    """The venv's python and its versions; made on the first call."""
    folder = venv_dir()
    marker = folder / ".installed.json"
    python = venv_python(folder)
    if marker.exists() and python.exists():
        return python, json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"making {folder} with {base}")
    subprocess.run([base, "-m", "venv", str(folder)], check=True)
    import torch

    pins = folder / "constraints.txt"
    pins.write_text(constraints())
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(pins)]
    if torch_from_pypi:
        say(f"installing torch=={torch.__version__.split('+')[0]} from PyPI")
        subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True)
        how = "pip (PyPI)"
    else:
        closure = dependency_closure("torch")
        count = link_distributions(closure, _site_packages(python))
        say(f"linked torch {torch.__version__} and {len(closure) - 1} dependencies ({count} files)")
        how = "hard-linked from the project venv: " + ", ".join(
            sorted(f"{d.metadata['Name']}=={d.version}" for d in closure)
        )
    say(f"pip install trl=={TRL_VERSION} (other packages pinned to the project venv's versions)")
    subprocess.run([*pip, f"trl=={TRL_VERSION}"], check=True)
    versions = describe(python)
    versions["torch_install"] = how
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (folder / "freeze.txt").write_text(freeze)
    marker.write_text(json.dumps(versions, indent=2))
    return python, versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-from-pypi", action="store_true")
    parser.add_argument("--recreate", action="store_true", help="remove and make it again")
    args = parser.parse_args()
    if args.recreate:
        shutil.rmtree(venv_dir(), ignore_errors=True)
    python, versions = ensure(args.torch_from_pypi)
    print(python)
    print(json.dumps(versions, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The container images the test node runs, built from our Dockerfiles and loaded into
containerd.

``hack/build-images.sh`` builds them with buildah (cached under ``$RLHF_CACHE``: a warm run
takes seconds) and exports each as a docker-archive with its image id beside it:

=========  ======================================  ============================
name       image                                   from
=========  ======================================  ============================
operator   ghcr.io/rlhf-operator/operator:APPVER   Dockerfile, CPU Python base
trainer    ghcr.io/rlhf-operator/trainer:APPVER    trainer_image/Dockerfile, CPU torch base
pause      registry.k8s.io/pause:3.6               hack/images/pause.c
=========  ======================================  ============================

The names are the chart's defaults (and containerd 1.6's default ``sandbox_image``), so
pods find them with ``imagePullPolicy: IfNotPresent`` or ``Never``; no registry is needed.

Usage::

    archives = build_images()
    load_images("/run/node/containerd.sock")   # imports what containerd lacks

Standard library only, plus the ``ctr`` command of the containerd being loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "build-images.sh"
IMAGE_NAMES = ("operator", "trainer", "pause")


def images_dir() -> Path:
    """Where build-images.sh leaves the archives: ``$RLHF_CACHE/images``."""
    cache = os.environ.get("RLHF_CACHE") or str(Path.home() / ".cache" / "rlhf-operator")
    return Path(cache) / "images"


@dataclass(frozen=True)
class ImageArchive:
    """One built image: its name in containerd, its id (the config digest) and the
    docker-archive that ``ctr images import`` reads."""

    name: str
    reference: str
    image_id: str
    path: Path


def built_images(directory: Path | None = None) -> dict[str, ImageArchive]:
    """The archives of the last build, by name; an error says to build when one is missing."""
    directory = directory or images_dir()
    archives = {}
    for name in IMAGE_NAMES:
        files = [directory / f"{name}.{suffix}" for suffix in ("tar", "id", "ref")]
        missing = [str(file) for file in files if not file.is_file()]
        if missing:
            raise FileNotFoundError(
                f"image {name!r} is not built ({', '.join(missing)} missing): "
                f"run `bash {BUILD_SCRIPT.relative_to(ROOT)}`"
            )
        archive, image_id, reference = files
        archives[name] = ImageArchive(
            name=name,
            reference=reference.read_text().strip(),
            image_id=image_id.read_text().strip(),
            path=archive,
        )
    return archives


def build_images(timeout: float = 3600) -> dict[str, ImageArchive]:
    """Run hack/build-images.sh (2 seconds when nothing changed, ~4 minutes cold on 2 cores)
    and return its archives. The script's progress goes to this process's output."""
    try:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, timeout=timeout, cwd=ROOT)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed (exit {error.returncode}); its output above names the "
            f"step, and the build logs are in {images_dir() / 'logs'}"
        ) from error
    return built_images()


class Containerd:
    """``ctr`` against one containerd socket and namespace."""

    def __init__(
        self,
        address: str,
        namespace: str = "k8s.io",
        ctr: str = "ctr",
        snapshotter: str | None = None,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.ctr = ctr
        # The snapshotter the images are unpacked into: the CRI's (containerd's default,
        # overlayfs, unless the node's config names another).
        self.snapshotter_args = ["--snapshotter", snapshotter] if snapshotter else []

    def run(self, *args: str, timeout: float = 60) -> str:
        command = [self.ctr, "--address", self.address, "--namespace", self.namespace, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def image_id(self, reference: str) -> str | None:
        """The config digest of `reference` if containerd has it complete and unpacked,
        else None."""
        lines = self.run(
            "images", "check", *self.snapshotter_args, f"name=={reference}"
        ).splitlines()
        # REF TYPE DIGEST STATUS SIZE UNPACKED; STATUS reads e.g. "complete (7/7)".
        rows = [line.split() for line in lines[1:] if line.split()[:1] == [reference]]
        if not rows or rows[0][3] != "complete" or rows[0][-1] != "true":
            return None
        manifest = json.loads(self.run("content", "get", rows[0][2]))
        if "manifests" in manifest:  # an index: the one image it lists
            (entry,) = manifest["manifests"]
            manifest = json.loads(self.run("content", "get", entry["digest"]))
        return str(manifest["config"]["digest"])

    def import_archive(self, archive: ImageArchive) -> None:
        self.run("images", "import", *self.snapshotter_args, str(archive.path), timeout=900)
        loaded = self.image_id(archive.reference)
        if loaded != archive.image_id:
            raise RuntimeError(
                f"imported {archive.path} but containerd's {archive.reference} has id "
                f"{loaded}, not {archive.image_id}: was the archive rebuilt meanwhile?"
            )


def load_images(
    ctr_address: str,
    namespace: str = "k8s.io",
    archives: dict[str, ImageArchive] | None = None,
    ctr: str = "ctr",
    snapshotter: str | None = None,
) -> list[str]:
    """Import every built image into the containerd at `ctr_address` unless it already has
    one with the same id under the same name; return the names imported.

    `namespace` k8s.io is the one the CRI plugin (the kubelet's view) uses. Images added
    here show up in the CRI at once; containerd's CRI caches references, though, so after
    *removing* images restart containerd before the kubelet relies on their absence.
    Importing takes time (the 4 GB trainer image: ~70 s on 2 cores) and containerd keeps
    both the blobs and the unpacked layers (~8.5 GB): keep the node's containerd root in the
    cache across runs, so that a warm run imports nothing."""
    runtime = Containerd(ctr_address, namespace, ctr, snapshotter)
    imported = []
    for archive in (archives or built_images()).values():
        if runtime.image_id(archive.reference) == archive.image_id:
            continue
        runtime.import_archive(archive)
        imported.append(archive.name)
    return imported


def missing_images() -> list[str]:
    """Why the images can't be loaded (empty when every archive is built)."""
    try:
        built_images()
    except FileNotFoundError as error:
        return [str(error)]
    return []


def reference(name: str) -> str:
    """The image name (as pods refer to it) of ``operator``, ``trainer`` or ``pause``."""
    return built_images()[name].reference

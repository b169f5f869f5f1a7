"""Trim PyPI's torch (the CUDA build, the only Linux build on PyPI) to what it loads on CPU.

Run after `pip install torch==X` in the CPU base (hack/images/cpu-base.Containerfile):

1. Drop triton (~1 GB: torch.compile's GPU code generator, which CPU runs never import) and
   its requirement in torch's metadata, so that a later `pip install` of something that
   requires torch (transformers, accelerate, trl...) does not bring it back.
2. Delete the CUDA libraries that torch does not link: torch's own libraries need cudart,
   cuBLAS, cuFFT, NCCL, ... to load at all (DT_NEEDED, found through their RPATH), even on a
   machine without a GPU, so those stay; the ones CUDA code opens only when it runs on a
   GPU (the cuDNN engines, cuSOLVER, ...) go. About 1.3 GB less.

The result imports and computes on CPU like the full install; it is a test stand-in, not an
image to train on GPUs with.
"""

import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

GPU_ONLY_REQUIREMENTS = ("triton",)


def drop_requirements(name: str, prefixes: tuple[str, ...]) -> list[str]:
    dist = distribution(name)
    (metadata,) = [
        Path(str(file.locate()))
        for file in dist.files or []
        if file.name == "METADATA" and file.parent.name.endswith(".dist-info")
    ]
    lines = metadata.read_text().splitlines(keepends=True)
    dropped = [
        line
        for line in lines
        if line.startswith("Requires-Dist:")
        and line.split(":", 1)[1].strip().lower().startswith(prefixes)
    ]
    metadata.write_text("".join(line for line in lines if line not in dropped))
    return [line.split(":", 1)[1].strip() for line in dropped]


def linked_libraries(objects: list[Path]) -> set[Path]:
    """Every shared library the dynamic loader resolves for `objects`, transitively."""
    output = subprocess.run(
        ["ldd", *map(str, objects)], capture_output=True, text=True, check=True
    ).stdout
    libraries = set()
    for line in output.splitlines():
        if "=> not found" in line:
            sys.exit(f"cpu-only-torch: a library torch needs is missing: {line.strip()}")
        if "=>" in line and "/" in line.split("=>", 1)[1]:
            libraries.add(Path(line.split("=>", 1)[1].split()[0]).resolve())
    return libraries


def prune_cuda_libraries(site_packages: Path) -> int:
    torch_dir = site_packages / "torch"
    loaded = [*torch_dir.glob("_C*.so"), torch_dir / "lib" / "libtorch_global_deps.so"]
    keep = linked_libraries(loaded)
    freed = 0
    for library in sorted((site_packages / "nvidia").glob("**/lib/*.so*")):
        if library.is_file() and not library.is_symlink() and library.resolve() not in keep:
            freed += library.stat().st_size
            print(f"cpu-only-torch: deleted {library.relative_to(site_packages)}")
            library.unlink()
    return freed


def main() -> None:
    for requirement in drop_requirements("torch", GPU_ONLY_REQUIREMENTS):
        print(f"cpu-only-torch: dropped torch's requirement {requirement}")
    site_packages = Path(str(distribution("torch").locate_file("")))
    freed = prune_cuda_libraries(site_packages)
    print(f"cpu-only-torch: {freed / 2**20:.0f} MiB of GPU-only CUDA libraries deleted")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU checks as one command for a borrowed GPU machine that has torch but cannot reach
# a package index: wheels for what it lacks travel in .whl/ (made with `pip download` for
# its Python), are installed into /tmp/site, and shadow the machine's own copies.
#   bash bench/device_run.sh [gpu_throughput.py options]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/rlhf-gpu-out}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/operator:$PWD/trainer_image${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "trl", "accelerate", "datasets", "peft", "liger_kernel", "pyarrow"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as error:  # report, do not stop: the bench says what it cannot run
        print(f"{name} missing: {error}")
PY
python3 bench/gpu_throughput.py "$@" 2>&1 | grep -v -E "Loading weights|^Key |^---|MISSING|^Notes|newly initialized|LOAD REPORT|^$" | tee "$out/gpu_throughput.log"
exit "${PIPESTATUS[0]}"

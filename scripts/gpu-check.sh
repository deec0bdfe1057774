#!/usr/bin/env bash
# GPU readiness in one command (at most ~8 minutes on a lent GPU machine): the CUDA twins of
# the tests, batched FGLA 100 at large batches, the inverter, the end-to-end route, with
# real-time factors and peak GPU memory. Results: $OUT/gpu-check.json (or ./gpu-check.json).
#
# Needs a Python with a CUDA build of torch and the pipeline's dependencies (the GPU machine
# reaches no package index): PYTHON=/path/to/python bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "librosa", "zarr", "dask", "distributed", "typer", "rich",
                       "pesq", "pystoi", "soundfile") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (install them with the CUDA torch)")
import torch
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA GPU")
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY
# 1. the same tests on CUDA (tests/test_device.py holds the CPU/CUDA twins)
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py
# 2. speed and memory
timeout 240 "$PY" benchmarks/gpu.py --out "$OUT/gpu-check.json"

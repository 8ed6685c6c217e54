#!/usr/bin/env bash
# The GPU check, in one script (issue: "Ready for the GPU"). On a fresh GPU machine with its own
# Python and torch, from the repository root, after benchmarks/gpu_wheels.sh filled .whl/ here:
#
#   bash benchmarks/gpu_check.sh   # ~5 min on an H100/H200; steps capped at 180 + 270 s (< 8 min)
#
# 1. installs RecBole and its pure-Python needs from .whl/ without dependencies (no network there;
#    the package itself runs from the checkout; numpy 2 / scipy >= 1.13 / pandas 3 are handled by
#    recbole_fitmm.compat);
# 2. runs the device-parametrised tests (model contract, resume, scoring, load + recommend) on CUDA;
# 3. times FITMM and LightGCN for 2 epochs on the Baby-sized synthetic data (4096-d + 384-d
#    features) and prints seconds per epoch, per evaluation and peak GPU memory.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device"
print(torch.__version__, torch.cuda.get_device_name(0))
PY
echo "== device-parametrised tests on CUDA"
RECBOLE_FITMM_DEVICES=cuda timeout 180 python3 -m pytest -q -p no:cacheprovider -x \
  -m device tests/test_models.py tests/test_fitmm.py tests/test_resume_models.py \
  tests/test_recommend.py 2>&1 \
  | tee "$OUT/tests.log" | tail -25
echo "== FITMM vs LightGCN on Baby-sized data, 2 epochs, CUDA"
timeout 270 python3 benchmarks/bench_fitmm.py --epochs 2 --skip-ml100k --device cuda \
  --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log" | tail -20

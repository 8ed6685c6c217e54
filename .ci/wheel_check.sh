#!/usr/bin/env bash
# CI step: build the wheel, install it (not editable) into a fresh virtual environment and run one
# epoch of FITMM on the embedded dataset from an unrelated working folder, through the installed
# console entry point and from Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
TORCH="${TORCH:-torch==2.13.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" . 2>&1 | grep -v "^WARNING: Location" || true
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$TORCH" 2>&1 | grep -v "^WARNING: Location" || true
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/recbole_fitmm-*.whl 2>&1 | grep -v "^WARNING: Location" || true
mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
"$work/venv/bin/recbole-fitmm" --model=FITMM --dataset=mmsynth --epochs=1 --gpu_id= --state=ERROR
# own data in the working folder: prepare writes ./dataset_atomic and ./properties/dataset
"$work/venv/bin/python" - <<'PY'
import random
rows = ["user,item,rating"] + [
    f"u{u},i{random.Random(u * 100 + k).randrange(60)},5" for u in range(80) for k in range(12)
]
open("ratings.csv", "w").write("\n".join(rows) + "\n")
PY
"$work/venv/bin/python" -m recbole_fitmm.prepare ratings.csv --user user --item item \
  --rating rating --duplicates first --name mine > /dev/null
test -f dataset_atomic/mine/mine.train.inter && test -f properties/dataset/mine.yaml
"$work/venv/bin/recbole-fitmm" --model=BPR --dataset=mine --config_files=properties/dataset/mine.yaml \
  --epochs=1 --gpu_id= --state=ERROR > /dev/null
"$work/venv/bin/python" - <<'PY'
from recbole_fitmm import run_recbole_fitmm

result = run_recbole_fitmm("FITMM", "mmsynth", config_dict={"epochs": 1, "gpu_id": "", "state": "ERROR"})
assert result["test_result"]["recall@20"] > 0, result
print("wheel check: FITMM trained one epoch from the installed package")
PY

#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the pure-Python wheels the GPU machine lacks, into .whl/
# (git-ignored through .git/info/exclude), for benchmarks/gpu_check.sh. The GPU machine has its own
# Python 3.12 and torch; RecBole's other needs (numpy, scipy, pandas, torch, pyyaml, tensorboard,
# scikit-learn, tqdm, psutil, matplotlib, colorama, tabulate) are already there
# (recbole_notes.md §2, the device tool's KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
for spec in recbole==1.2.1 colorlog==4.7.2 texttable==1.7.0 thop==0.1.1.post2209072238; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl

#!/usr/bin/env bash
# RecBole's own general-model tests (tests/model/test_model_auto.py at v1.2.1) with the plugin
# imported first, as a user who installed recbole-fitmm would run them:
#
#   bash benchmarks/recbole_model_tests.sh PATH/TO/RecBole-checkout [python]
#
# Exports RecBole v1.2.1's tests/ from the checkout (a git clone; nothing of it is copied into
# this repository) into a temporary folder, adds a conftest.py that imports recbole_fitmm (its
# compat fixes applied, as for any plugin run), and runs TestGeneralRecommender there.
set -euo pipefail
recbole=${1:?path to a RecBole git checkout}
python=${2:-$(dirname "$0")/../.venv/bin/python}
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"  # absolute, not resolved: a venv python is a symlink
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$recbole" archive v1.2.1 tests | tar -x -C "$work"
printf 'import recbole_fitmm.config  # noqa: F401  (the plugin, imported first)\n' > "$work/conftest.py"
cd "$work"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$python" -m pytest -q -p no:cacheprovider \
  tests/model/test_model_auto.py::TestGeneralRecommender 2>&1 | tail -15

"""The tuned comparison: the same budget for every model, selection on validation, reuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import recbole_fitmm.compare as compare_module
import recbole_fitmm.compare_tuned as tuned_module
from recbole_fitmm.compare_tuned import plan, tuned_compare
from recbole_fitmm.errors import ConfigError
from tests.conftest import toy_config


def test_models_are_tuned_with_the_budget_then_compared_at_their_selection(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = toy_config(toy_root, epochs=1)
    compared: dict[str, Any] = {}
    real_compare = tuned_module.compare

    def spy(models: list, dataset: str, seeds: list, files: Any, config: dict, *a: Any, **k: Any):
        compared.update(config)
        return real_compare(models, dataset, seeds, files, config, *a, **k)

    monkeypatch.setattr(tuned_module, "compare", spy)
    out = tmp_path / "tuned"
    result = tuned_compare(["Pop", "BPR"], "toy", [1, 2], 3, config_dict=values, out_dir=out)
    search = json.loads((out / "tuning" / "BPR.json").read_text())
    assert plan("BPR", 3) == ("random", 3, 16) and len(search["trials"]) == 3
    assert len({json.dumps(t["params"], sort_keys=True) for t in search["trials"]}) == 3  # distinct
    best = max(search["trials"], key=lambda t: t["best_valid_score"])  # valid only
    assert search["best_params"] == best["params"]
    assert {k: compared[f"BPR:{k}"] for k in best["params"]} == best["params"]
    assert all(t["params"] and "seed" not in t["params"] for t in search["trials"])
    assert {record.seed for record in result.records} == {1, 2}
    assert "**Tuning**" in result.markdown and "| Pop | 0 | 0 |" in result.markdown
    # stored searches and runs are reused
    monkeypatch.setattr(tuned_module, "tune", lambda *a, **k: pytest.fail("tuned again"))
    monkeypatch.setattr(compare_module, "run_one", lambda *a, **k: pytest.fail("ran again"))
    again = tuned_compare(["Pop", "BPR"], "toy", [1, 2], 3, config_dict=values, out_dir=out)
    assert [r.test for r in again.records] == [r.test for r in result.records]


def test_the_tuning_seed_may_not_be_reported(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tuning seed 42 is one of the reported seeds"):
        tuned_compare(["BPR"], "toy", [42, 1], 2, config_dict=toy_config(toy_root))

"""Shared fixtures: every test runs in its own temporary folder on small generated data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from recbole_fitmm.data.synthetic import SyntheticSpec, generate, write_atomic

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS = ["train", "valid", "test"]

#: The small dataset most tests use: 160 users, <= 120 items, image + text features.
TOY_SPEC = SyntheticSpec(
    n_users=160,
    n_items=120,
    n_topics=4,
    modalities={"image": 24, "text": 12},
    mean_inter=14,
    seed=7,
)


@pytest.fixture(autouse=True)
def _isolated_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RecBole writes log/, log_tensorboard/ and saved/ into the cwd and reads sys.argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the read-only ``toy`` dataset (benchmark split files + 2 modalities)."""
    root = tmp_path_factory.mktemp("data")
    write_atomic(generate(TOY_SPEC), root, "toy")
    return root


def toy_config(root: Path, **overrides: Any) -> dict[str, Any]:
    """A quiet, CPU-only, few-epoch configuration for the ``toy`` dataset under ``root``."""
    config = {
        "data_path": str(root),
        "benchmark_filename": SPLITS,
        "modalities": ["image", "text"],
        "gpu_id": "",
        "state": "ERROR",
        "show_progress": False,
        "epochs": 2,
        "stopping_step": 2,
        "eval_batch_size": 1 << 20,
        "checkpoint_every": 1,  # a checkpoint after every epoch: the kill-and-resume tests
    }
    config.update(overrides)
    return config

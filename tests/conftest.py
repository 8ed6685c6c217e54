"""Shared fixtures: every test runs in its own temporary folder on small generated data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recbole_fitmm.data.synthetic import SyntheticData, SyntheticSpec, generate, write_atomic

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


#: The model contract's "known best item" data: groups x items per group x users per group.
KNOWN_GROUPS, KNOWN_GROUP_ITEMS, KNOWN_GROUP_USERS = 4, 10, 10


def known_best_data() -> SyntheticData:
    """Users in disjoint groups whose held-out item is the one group item they have not seen.

    User ``j`` of group ``g`` trains on 8 of the group's 10 items; item ``(j mod 10)`` of the group
    is its valid item and item ``(j + 1 mod 10)`` its test item, so once training and valid items
    are masked, the test item is the user's only unseen item of its own group: the known best
    item. Every item is trained by 8 users (equal popularity, so popularity cannot find it), and
    both feature modalities carry the item's group (a random direction per group plus 10% noise).
    """
    rows = []
    for g in range(KNOWN_GROUPS):
        items = g * KNOWN_GROUP_ITEMS + np.arange(KNOWN_GROUP_ITEMS)
        for j in range(KNOWN_GROUP_USERS):
            user = g * KNOWN_GROUP_USERS + j
            valid, test = items[j % len(items)], items[(j + 1) % len(items)]
            rows += [(user, int(i), 0) for i in items if i not in (valid, test)]
            rows += [(user, int(valid), 1), (user, int(test), 2)]
    rng = np.random.default_rng(0)
    groups = np.eye(KNOWN_GROUPS)[np.repeat(np.arange(KNOWN_GROUPS), KNOWN_GROUP_ITEMS)]
    features = {
        name: (
            groups @ rng.normal(size=(KNOWN_GROUPS, dim))
            + 0.1 * rng.normal(size=(len(groups), dim))
        ).astype(np.float32)
        for name, dim in (("image", 8), ("text", 6))
    }
    users = np.eye(KNOWN_GROUPS)[np.repeat(np.arange(KNOWN_GROUPS), KNOWN_GROUP_USERS)]
    return SyntheticData(np.array(rows, dtype=np.int64), features, users, groups)


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


@pytest.fixture(scope="session")
def known_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the read-only ``known`` dataset (:func:`known_best_data`)."""
    root = tmp_path_factory.mktemp("known")
    write_atomic(known_best_data(), root, "known")
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


def device_params() -> list[Any]:
    """The devices the device-parametrised tests run on, as pytest params.

    ``cpu`` always; ``cuda`` marked ``device`` and skipped without a CUDA device.
    ``RECBOLE_FITMM_DEVICES=cuda`` (benchmarks/gpu_check.sh) keeps only the CUDA cases.
    """
    wanted = os.environ.get("RECBOLE_FITMM_DEVICES", "cpu,cuda").split(",")
    no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    params = []
    if "cpu" in wanted:
        params.append(pytest.param("cpu", id="cpu"))
    if "cuda" in wanted:
        params.append(pytest.param("cuda", id="cuda", marks=[pytest.mark.device, no_cuda]))
    return params


def gpu_id(device: str) -> str:
    """RecBole's ``gpu_id`` for a device: ``""`` (CPU) or ``"0"``."""
    return "0" if device == "cuda" else ""

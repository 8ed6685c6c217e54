"""Kill-and-resume and fixed-seed reproducibility for the plugin models with training randomness.

FREEDOM samples a pruned user–item graph at every epoch, LGMRec draws Gumbel noise and dropout
masks at every step, FITMM trains the raw feature tables through a fused Adam. For each of them a
run interrupted after an epoch and resumed from its last checkpoint must end exactly where the
uninterrupted run ends (same weights, same metrics), and two runs with the same seed must agree
bit for bit (``tests/test_checkpoint.py`` checks the same for BPR and VBPR).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.checkpoint import read_checkpoint
from tests.conftest import device_params, gpu_id, toy_config
from tests.test_checkpoint import Interrupt, interrupt_at, same_weights

#: Per-model settings: small embeddings (resuming does not depend on the sizes, only on the
#: random draws: FREEDOM's pruned graph keeps 20% of the edges, LGMRec keeps half the assignments).
MODELS: dict[str, dict[str, Any]] = {
    "FITMM": {"embedding_size": 16, "mlp_hidden_size": 32},
    "FREEDOM": {"embedding_size": 16, "feat_embed_dim": 16},
    "LGMRec": {"embedding_size": 16, "feat_embed_dim": 16},
}
EPOCHS = 2


def run_values(root: Path, model: str, device: str = "cpu") -> dict[str, Any]:
    """A 2-epoch run with 4 batches per epoch (the loader's random state matters)."""
    return toy_config(
        root,
        epochs=EPOCHS,
        stopping_step=10,
        train_batch_size=512,
        gpu_id=gpu_id(device),
        **MODELS[model],
    )


@pytest.fixture(scope="module", params=device_params())
def device(request: pytest.FixtureRequest) -> str:
    """The CPU, and a CUDA device when present."""
    return request.param


@pytest.fixture(scope="module", params=sorted(MODELS))
def whole(
    request: pytest.FixtureRequest,
    device: str,
    toy_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """One uninterrupted run per model and device, with absolute output paths."""
    model = request.param
    work = tmp_path_factory.mktemp(f"whole-{model}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setattr(sys, "argv", ["pytest"])
        values = {**run_values(toy_root, model, device), "checkpoint_dir": str(work / "saved")}
        result = run_recbole_fitmm(model, "toy", config_dict=values)
        return {"model": model, "device": device, **result}


def agree(a: dict[str, float], b: dict[str, float], device: str) -> bool:
    """Metrics equal on the CPU (deterministic), within 1e-3 on CUDA (sparse products and
    index additions accumulate in a nondeterministic order there)."""
    if device == "cpu":
        return a == b
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-3 for k in a)


def test_interrupted_run_resumes_to_the_same_result(
    whole: dict[str, Any], toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, device = whole["model"], whole["device"]
    values = {**run_values(toy_root, model, device), "checkpoint_dir": "b"}
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        with pytest.raises(Interrupt):
            run_recbole_fitmm(model, "toy", config_dict=values)
    (last,) = Path("b").glob("*.last.pth")
    assert read_checkpoint(last)["epoch"] == 0
    resumed = run_recbole_fitmm(model, "toy", config_dict=values, resume_from=last)
    assert resumed["last_checkpoint"] == str(last)
    assert read_checkpoint(last)["epoch"] == EPOCHS - 1
    assert agree(resumed["best_valid_result"], whole["best_valid_result"], device)
    assert agree(resumed["test_result"], whole["test_result"], device)
    if device == "cpu":
        assert same_weights(resumed["last_checkpoint"], whole["last_checkpoint"])
        assert same_weights(resumed["checkpoint"], whole["checkpoint"])


def test_same_seed_same_weights_and_metrics(whole: dict[str, Any], toy_root: Path) -> None:
    model, device = whole["model"], whole["device"]
    if device != "cpu":
        pytest.skip("bit-for-bit reproducibility is a CPU property (reproducibility: True)")
    again = run_recbole_fitmm(model, "toy", config_dict=run_values(toy_root, model))
    assert again["checkpoint"] != whole["checkpoint"]
    assert again["best_valid_result"] == whole["best_valid_result"]
    assert again["test_result"] == whole["test_result"]
    assert same_weights(again["last_checkpoint"], whole["last_checkpoint"])
    assert same_weights(again["checkpoint"], whole["checkpoint"])
    history = read_checkpoint(whole["last_checkpoint"])["history"]
    assert [entry["epoch"] for entry in history] == list(range(EPOCHS))  # every epoch trained

"""Safe, atomic, resumable checkpoints; loading a trained model; recommendations in raw ids."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.trainer import NCLTrainer
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_model as recbole_get_model

import recbole_fitmm.checkpoint as ckpt
from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.checkpoint import read_checkpoint, save_checkpoint
from recbole_fitmm.errors import CheckpointError, DataError
from recbole_fitmm.inference import load_model, recommend
from recbole_fitmm.registry import get_model
from recbole_fitmm.resumable import CheckpointMixin
from recbole_fitmm.trainer import TraditionalTrainer, Trainer, get_trainer
from tests.conftest import toy_config


class Interrupt(Exception):
    """Stands for a crash or a kill in the middle of training."""


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make training raise when it reaches ``epoch`` (before training it)."""
    original = CheckpointMixin._train_epoch

    def train_epoch(self: Any, train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
        if epoch_idx == epoch:
            raise Interrupt(f"killed at epoch {epoch}")
        return original(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(CheckpointMixin, "_train_epoch", train_epoch)


def weights(path: str | Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def same_weights(a: str | Path, b: str | Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def trained(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One finished two-epoch BPR run on the toy data, with absolute output paths."""
    work = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setattr(sys, "argv", ["pytest"])
        values = toy_config(toy_root, checkpoint_dir=str(work / "saved"))
        return run_recbole_fitmm("BPR", "toy", config_dict=values)


# ---------------------------------------------------------------------------- resumption
@pytest.mark.parametrize("model", ["BPR", "VBPR"])
def test_interrupted_run_resumes_to_the_same_result(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    values = toy_config(toy_root, epochs=4, stopping_step=10, train_batch_size=256)
    whole = run_recbole_fitmm(model, "toy", config_dict={**values, "checkpoint_dir": "a"})
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(Interrupt):
            run_recbole_fitmm(model, "toy", config_dict={**values, "checkpoint_dir": "b"})
    (last,) = Path("b").glob("*.last.pth")
    assert read_checkpoint(last)["epoch"] == 1
    if model == "BPR":  # the CLI-friendly way: --resume_from=latest
        resumed = run_recbole_fitmm(
            model, "toy", config_dict={**values, "checkpoint_dir": "b", "resume_from": "latest"}
        )
    else:
        resumed = run_recbole_fitmm(
            model, "toy", config_dict={**values, "checkpoint_dir": "b"}, resume_from=last
        )
    assert resumed["last_checkpoint"] == str(last)
    assert resumed["test_result"] == whole["test_result"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert same_weights(resumed["last_checkpoint"], whole["last_checkpoint"])
    assert same_weights(resumed["checkpoint"], whole["checkpoint"])
    assert read_checkpoint(resumed["last_checkpoint"])["epoch"] == 3


def test_resume_after_an_epoch_without_validation(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = toy_config(toy_root, epochs=3, eval_step=2, train_batch_size=256)
    whole = run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "a"})
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)  # epoch 0 trained, not yet validated
        with pytest.raises(Interrupt):
            run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "b"})
    (last,) = Path("b").glob("*.last.pth")
    state = read_checkpoint(last)
    assert state["epoch"] == 0 and state["best_file"] is None
    resumed = run_recbole_fitmm(
        "BPR", "toy", config_dict={**values, "checkpoint_dir": "b"}, resume_from=last
    )
    assert resumed["test_result"] == whole["test_result"]
    assert same_weights(resumed["last_checkpoint"], whole["last_checkpoint"])


def test_resuming_a_finished_run_trains_nothing(
    trained: dict[str, Any], toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_at(monkeypatch, 0)  # any training would raise
    values = toy_config(toy_root, checkpoint_dir=str(Path(trained["checkpoint"]).parent))
    again = run_recbole_fitmm(
        "BPR", "toy", config_dict=values, resume_from=trained["last_checkpoint"]
    )
    assert again["test_result"] == trained["test_result"]
    assert again["checkpoint"] == trained["checkpoint"]


def test_resume_refuses_wrong_checkpoints(
    trained: dict[str, Any], toy_root: Path, tmp_path: Path
) -> None:
    values = toy_config(toy_root)
    with pytest.raises(CheckpointError, match="holds best weights only"):
        run_recbole_fitmm("BPR", "toy", config_dict=values, resume_from=trained["checkpoint"])
    with pytest.raises(CheckpointError, match="holds a BPR model, not LightGCN"):
        run_recbole_fitmm(
            "LightGCN", "toy", config_dict=values, resume_from=trained["last_checkpoint"]
        )
    other = changed_copy(toy_root, tmp_path)
    with pytest.raises(CheckpointError, match="made from other data.*train.inter"):
        run_recbole_fitmm(
            "BPR", "toy", config_dict=toy_config(other), resume_from=trained["last_checkpoint"]
        )
    with pytest.raises(CheckpointError, match="latest found no"):
        run_recbole_fitmm("BPR", "toy", config_dict={**values, "resume_from": "latest"})


def changed_copy(toy_root: Path, tmp_path: Path) -> Path:
    """A copy of the toy data with one training interaction less."""
    root = tmp_path / "copy"
    shutil.copytree(toy_root / "toy", root / "toy")
    train = root / "toy" / "toy.train.inter"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))
    return root


# ---------------------------------------------------------------------------- safe files
def test_checkpoints_hold_only_tensors_and_plain_data(trained: dict[str, Any]) -> None:
    for path in (trained["checkpoint"], trained["last_checkpoint"]):
        state = torch.load(path, weights_only=True)
        assert state["format"] == ckpt.FORMAT and "config" not in state
        assert state["provenance"]["model"] == "BPR"
        sidecar = json.loads(Path(path + ".json").read_text())
        assert sidecar["provenance"] == json.loads(json.dumps(state["provenance"]))
        assert "state_dict" not in sidecar and sidecar["kind"] in ("best", "last")
    last = torch.load(trained["last_checkpoint"], weights_only=True)
    assert {"python", "numpy", "torch", "cuda", "loader"} <= set(last["rng"])
    assert last["optimizer"]["state"] and last["best_valid_result"] == trained["best_valid_result"]
    leftovers = [p for p in Path(trained["checkpoint"]).parent.iterdir() if ".tmp" in p.name]
    assert not leftovers


def test_unsafe_or_broken_files_are_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    recbole_style = tmp_path / "recbole.pth"
    torch.save({"config": trained["config"], "state_dict": {}}, recbole_style)
    with pytest.raises(CheckpointError, match="cannot be read safely.*Unsupported global"):
        read_checkpoint(recbole_style)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(trained["checkpoint"]).read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated.pth cannot be read safely"):
        read_checkpoint(truncated)
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="is not a recbole_fitmm.checkpoint/1 checkpoint"):
        read_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")


def test_failed_write_keeps_the_previous_checkpoint(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pth"
    state = {"kind": "best", "provenance": trained["provenance"], "w": torch.ones(3)}
    save_checkpoint(path, state)
    before = path.read_bytes()
    real = ckpt.atomic_write

    def dying_write(target: Any, write: Any) -> Any:
        def half(handle: Any) -> None:
            handle.write(b"partial")
            raise KeyboardInterrupt

        return real(target, half)

    monkeypatch.setattr(ckpt, "atomic_write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**state, "w": torch.zeros(3)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "model.pth.json"]


def test_evaluation_loads_with_weights_only(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, model, _, _, _, test_data = load_model(trained["checkpoint"])
    calls: list[Any] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    trainer = get_trainer(config["MODEL_TYPE"], "BPR")(config, model)
    result = trainer.evaluate(test_data, model_file=trained["checkpoint"])
    assert calls == [True]
    assert {k: float(v) for k, v in result.items()} == trained["test_result"]


# ---------------------------------------------------------------------------- load & recommend
def test_load_model_rebuilds_the_trained_model(trained: dict[str, Any], tmp_path: Path) -> None:
    config, model, dataset, train_data, _, test_data = load_model(trained["last_checkpoint"])
    assert config["model"] == "BPR" and not model.training
    assert all(
        torch.equal(v, weights(trained["last_checkpoint"])[k])
        for k, v in model.state_dict().items()
    )
    copy = tmp_path / "moved"
    shutil.copytree(Path(config["data_path"]), copy / "toy")
    moved = load_model(trained["checkpoint"], {"data_path": str(copy)})[0]
    assert Path(moved["data_path"]) == copy / "toy"  # same content, another place: accepted
    other = changed_copy(Path(config["data_path"]).parent, tmp_path)
    with pytest.raises(CheckpointError, match="made from other data.*train.inter"):
        load_model(trained["checkpoint"], {"data_path": str(other)})


def test_recommend_returns_raw_tokens_without_training_items(trained: dict[str, Any]) -> None:
    _, model, _, train_data, _, _ = load_model(trained["checkpoint"])
    train = train_data.dataset
    users = ["3", "10", "42"]
    items, scores = recommend(model, train, users, k=10)
    assert len(items) == 3 and all(len(row) == 10 for row in items)
    seen = train.inter_matrix(form="csr")
    token2id = train.field2token_id
    for user, row_items, row_scores in zip(users, items, scores):
        uid = token2id["user_id"][user]
        history = set(seen.indices[seen.indptr[uid] : seen.indptr[uid + 1]].tolist())
        iids = [token2id["item_id"][token] for token in row_items]
        assert not history & set(iids) and 0 not in iids
        assert row_scores == sorted(row_scores, reverse=True)
        with torch.no_grad():
            full = model.full_sort_predict(Interaction({"user_id": torch.tensor([uid])})).view(-1)
        np.testing.assert_allclose(row_scores, full[iids].numpy(), rtol=1e-6)
        rankable = [i for i in range(1, train.item_num) if i not in history]
        best = max(rankable, key=lambda i: float(full[i]))
        assert iids[0] == best
    with pytest.raises(DataError, match="unknown user tokens.*'nobody'"):
        recommend(model, train, ["3", "nobody"], k=5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        recommend(model, train, ["3"], k=0)


# ---------------------------------------------------------------------------- trainer lookup
@pytest.mark.parametrize(
    ("model", "expected"),
    [("BPR", Trainer), ("LightGCN", Trainer), ("Pop", TraditionalTrainer)],
)
def test_general_models_get_the_checkpointing_trainer(model: str, expected: type) -> None:
    assert get_trainer(get_model(model).type, model) is expected


def test_special_and_plugin_trainers_get_the_mixin() -> None:
    ncl = get_trainer(recbole_get_model("NCL").type, "NCL")  # faiss is only needed to train
    assert issubclass(ncl, CheckpointMixin) and issubclass(ncl, NCLTrainer)
    assert get_trainer(recbole_get_model("NCL").type, "NCL") is ncl
    vbpr = get_trainer(get_model("VBPR").type, "VBPR")
    assert issubclass(vbpr, CheckpointMixin)
    sasrec = get_trainer(get_model("SASRec").type, "SASRec")
    assert sasrec is RecBoleTrainer  # sequential models keep RecBole's trainer

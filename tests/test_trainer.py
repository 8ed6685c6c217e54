"""The trainer on the way to a GPU: resume off the CPU, a diverged loss, stale or mislabelled
results, the checkpoint cadence and its two-phase commit, mixed precision, re-evaluation
tolerance."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import recbole_fitmm.checkpoint as ckpt
import recbole_fitmm.compare as compare_module
import recbole_fitmm.resumable as resumable
from recbole_fitmm import run_recbole_fitmm
from recbole_fitmm.compare import REEVALUATION_TOLERANCE, run_one, run_signature
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import CheckpointError, ConfigError
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.model.layers import sparse_product
from recbole_fitmm.model.lgmrec import _BoundedLogSumExp
from recbole_fitmm.model.spectral import band_bases
from recbole_fitmm.quick_start import build_config
from recbole_fitmm.registry import PLUGIN_MODELS, get_model
from recbole_fitmm.resumable import CheckpointMixin
from tests.conftest import toy_config
from tests.test_checkpoint import Interrupt, interrupt_at, same_weights


def last_of(folder: str | Path) -> Path:
    (last,) = Path(folder).glob("*.last.pth")
    return last


# ---------------------------------------------------------------------------- resume off the CPU
def test_resume_reads_generator_states_on_the_cpu(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU trainer used to load ``.last.pth`` onto its device, then call ``.numpy()`` on the
    numpy generator state there. The meta device stands for the GPU: a checkpoint read onto it
    cannot be restored."""
    values = toy_config(toy_root, epochs=3, stopping_step=10, train_batch_size=256)
    whole = run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "a"})
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(Interrupt):
            run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "b"})
    real_read = resumable.read_checkpoint

    def read_onto(path: Any, map_location: Any = "cpu") -> dict[str, Any]:
        device = "meta" if str(map_location) != "cpu" else "cpu"
        return real_read(path, map_location=device)

    monkeypatch.setattr(resumable, "read_checkpoint", read_onto)
    original_resume = CheckpointMixin.resume_checkpoint

    def resume_on_meta(self: Any, path: Any) -> None:  # the trainer believes in a GPU
        device, self.device = self.device, torch.device("meta")
        try:
            original_resume(self, path)
        finally:
            self.device = device

    monkeypatch.setattr(CheckpointMixin, "resume_checkpoint", resume_on_meta)
    resumed = run_recbole_fitmm(
        "BPR", "toy", config_dict={**values, "checkpoint_dir": "b"}, resume_from=last_of("b")
    )
    assert resumed["best_valid_result"] == whole["best_valid_result"]


def test_restore_rng_round_trips_the_generator_states() -> None:
    torch.manual_seed(5)
    np.random.seed(5)
    state = ckpt.capture_rng(None)
    expected = torch.rand(3), np.random.rand(3)
    torch.rand(7), np.random.rand(7)  # move both generators on
    ckpt.restore_rng(state, None)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


# ---------------------------------------------------------------------------- a diverged loss
def nan_from_epoch(monkeypatch: pytest.MonkeyPatch, model_name: str, epoch: int) -> None:
    """Make ``model_name``'s loss NaN from ``epoch`` on (the weights then go NaN too)."""
    cls = PLUGIN_MODELS.get(model_name)
    if cls is None:
        from recbole.model.general_recommender import BPR as cls  # noqa: N811
    original = cls.calculate_loss
    original_start = CheckpointMixin._train_epoch

    def track(self: Any, train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
        self.model._forced_epoch = epoch_idx
        return original_start(self, train_data, epoch_idx, *args, **kwargs)

    def loss(self: Any, interaction: Any) -> torch.Tensor:
        value = original(self, interaction)
        return value * float("nan") if getattr(self, "_forced_epoch", 0) >= epoch else value

    monkeypatch.setattr(CheckpointMixin, "_train_epoch", track)
    monkeypatch.setattr(cls, "calculate_loss", loss)


@pytest.mark.parametrize("model", ["BPR", "FITMM"])
def test_a_nan_loss_ends_training_and_tests_the_best_checkpoint(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, model: str
) -> None:
    values = toy_config(toy_root, epochs=5, stopping_step=10, train_batch_size=256)
    reference = run_recbole_fitmm(model, "toy", config_dict={**values, "epochs": 2})
    nan_from_epoch(monkeypatch, model, 2)
    with caplog.at_level(logging.WARNING):
        result = run_recbole_fitmm(model, "toy", config_dict={**values, "checkpoint_dir": "x"})
    assert result["diverged"]["epoch"] == 2
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert result["test_result"] == reference["test_result"]  # the best of epochs 0-1, tested
    message = next(r.getMessage() for r in caplog.records if "not finite" in r.getMessage())
    assert "epoch 2" in message
    if model == "FITMM":  # the loss parts are named
        assert all(part in message for part in ("rec", "ib", "consistency"))


def test_a_nan_before_any_validation_leaves_no_test_result(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nan_from_epoch(monkeypatch, "BPR", 0)
    values = toy_config(toy_root, epochs=3, train_batch_size=256)
    result = run_recbole_fitmm("BPR", "toy", config_dict=values)
    assert result["diverged"]["epoch"] == 0 and result["test_result"] is None
    record = run_one("BPR", "toy", 7, None, values)
    assert record.diverged["epoch"] == 0 and record.test == {}


# ---------------------------------------------------------------------------- stale results
def test_run_signature_covers_yaml_data_version_and_code(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = toy_config(toy_root, seed=7)
    config = build_config("BPR", "toy", None, values)
    fingerprint = dataset_fingerprint(config)
    signature = run_signature(config, None, values, fingerprint)
    assert run_signature(config, None, values, fingerprint) == signature
    changed = {**fingerprint, "sha256": "0" * 64}
    assert run_signature(config, None, values, changed) != signature
    for name, value in (
        ("plugin_yaml_texts", lambda model, dataset: ["epochs: 3", "", ""]),
        ("code_digest", lambda: "other-sources"),
        ("__version__", "9.9.9"),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(compare_module, name, value)
            assert run_signature(config, None, values, fingerprint) != signature, name


def test_a_stored_run_is_not_reused_after_the_data_change(tmp_path: Path, toy_root: Path) -> None:
    data = tmp_path / "data"
    (data / "toy").mkdir(parents=True)
    for file in (toy_root / "toy").iterdir():
        (data / "toy" / file.name).write_bytes(file.read_bytes())
    values = toy_config(data, epochs=1)
    out = tmp_path / "cmp"
    first = compare_module.compare(["Pop"], "toy", [1], config_dict=values, out_dir=out)
    again = compare_module.compare(["Pop"], "toy", [1], config_dict=values, out_dir=out)
    assert again.records[0].train_seconds == first.records[0].train_seconds  # reused
    test_file = data / "toy" / "toy.test.inter"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join(lines[:-3]) + "\n")
    changed = compare_module.compare(["Pop"], "toy", [1], config_dict=values, out_dir=out)
    assert changed.records[0].train_seconds != first.records[0].train_seconds  # trained again


@pytest.mark.parametrize("change", [{"seed": 8}, {"learning_rate": 0.01}])
def test_resume_refuses_a_checkpoint_of_another_configuration(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any]
) -> None:
    values = toy_config(toy_root, epochs=4, stopping_step=10, checkpoint_dir="b")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        with pytest.raises(Interrupt):
            run_recbole_fitmm("BPR", "toy", config_dict=values)
    with pytest.raises(CheckpointError, match=f"another configuration \\({next(iter(change))}"):
        run_recbole_fitmm("BPR", "toy", config_dict={**values, **change, "resume_from": "latest"})


# ---------------------------------------------------------------------------- cadence, two phases
def test_checkpoint_cadence(toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    original = resumable.save_checkpoint

    def counting(path: Any, state: Any) -> Path:
        if state["kind"] == "last":
            writes.append(state["epoch"])
        return original(path, state)

    monkeypatch.setattr(resumable, "save_checkpoint", counting)
    values = toy_config(toy_root, epochs=5, stopping_step=10)
    run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_every": 2})
    assert writes == [1, 3, 4]  # after every second epoch, and when training ends
    writes.clear()
    run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_every": 0})
    assert writes == [4]  # the 300 s default is never reached: only the final write


@pytest.mark.parametrize("crash", ["before_last", "before_commit"])
def test_a_crash_between_the_two_writes_leaves_consistent_checkpoints(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    values = toy_config(toy_root, epochs=4, stopping_step=10, train_batch_size=256)
    whole = run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "a"})
    calls = {"n": 0}
    real_save, real_commit = resumable.save_checkpoint, resumable._commit

    def save(path: Any, state: Any) -> Path:
        pending = list(Path(path).parent.glob("*.pending"))
        if crash == "before_last" and state["kind"] == "last" and state["epoch"] and pending:
            raise Interrupt("crash after the pending best, before the last checkpoint")
        return real_save(path, state)

    def commit(pending: Path, best: Path) -> None:
        calls["n"] += 1
        if crash == "before_commit" and calls["n"] == 2:  # the second improvement's write
            raise Interrupt("crash after the last checkpoint, before the commit")
        real_commit(pending, best)

    with monkeypatch.context() as patch:
        patch.setattr(resumable, "save_checkpoint", save)
        patch.setattr(resumable, "_commit", commit)
        with pytest.raises(Interrupt):
            run_recbole_fitmm("BPR", "toy", config_dict={**values, "checkpoint_dir": "b"})
    pending = list(Path("b").glob("*.pending"))
    assert len(pending) == 1  # the interrupted two-phase write left its pending best
    resumed = run_recbole_fitmm(
        "BPR", "toy", config_dict={**values, "checkpoint_dir": "b"}, resume_from=last_of("b")
    )
    assert not list(Path("b").glob("*.pending"))
    assert resumed["test_result"] == whole["test_result"]
    assert same_weights(resumed["checkpoint"], whole["checkpoint"])


# ---------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("model", sorted(PLUGIN_MODELS))
def test_every_plugin_model_trains_under_cpu_autocast(toy_root: Path, model: str) -> None:
    values = toy_config(toy_root, epochs=1, enable_amp=True, train_batch_size=512)
    result = run_recbole_fitmm(model, "toy", config_dict=values)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert result["test_result"]["recall@20"] > 0


def test_custom_functions_run_in_float32_under_autocast() -> None:
    matrix = torch.eye(4).to_sparse_csr()
    x = torch.randn(4, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_product(matrix, matrix, x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones(4, 3))


def test_band_split_and_lgmrec_infonce_run_in_float32_under_autocast() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bases, _ = band_bases([x], 4, 2)
    reference, _ = band_bases([x.float()], 4, 2)  # the same inputs, no autocast
    assert bases.dtype == torch.float32 and torch.equal(bases, reference)
    anchor, candidates = (F.normalize(torch.randn(n, 8)).to(torch.bfloat16) for n in (5, 40))
    anchor = anchor * 4  # cosines times a 1/τ (a power of two keeps bfloat16 values exact)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = _BoundedLogSumExp.apply(anchor, candidates)  # LGMRec's InfoNCE denominator
    reference = torch.logsumexp(anchor.float() @ candidates.float().T, dim=1)
    assert total.dtype == torch.float32  # in bfloat16 the matmul and exp would be ~1e-2 off
    torch.testing.assert_close(total, reference, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- re-evaluation
@pytest.mark.parametrize("gap", [REEVALUATION_TOLERANCE / 2, REEVALUATION_TOLERANCE * 4])
def test_reevaluation_within_the_tolerance_keeps_the_run(
    toy_root: Path, monkeypatch: pytest.MonkeyPatch, gap: float
) -> None:
    real = compare_module.evaluate_checkpoint

    def shifted(config: Any, checkpoint: Any) -> Any:
        result, per_user = real(config, checkpoint)
        return {k: v + gap for k, v in result.items()}, per_user

    monkeypatch.setattr(compare_module, "evaluate_checkpoint", shifted)
    values = toy_config(toy_root, epochs=1)
    if gap < REEVALUATION_TOLERANCE:
        record = run_one("BPR", "toy", 3, None, values)
        assert (
            record.test["recall@20"]
            == run_recbole_fitmm("BPR", "toy", config_dict={**values, "seed": 3})["test_result"][
                "recall@20"
            ]
        )
    else:
        with pytest.raises(RuntimeError, match="differ from the run's test result"):
            run_one("BPR", "toy", 3, None, values)


def test_outputs_get_the_usual_file_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write_text(tmp_path / "out.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_each_run_logs_into_its_own_file(toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as outside pytest: RecBole's basicConfig applies
    values = toy_config(toy_root, epochs=1, state="INFO")
    run_recbole_fitmm("Pop", "toy", config_dict=values)
    run_recbole_fitmm("BPR", "toy", config_dict=values)
    logs = {path.parent.name: path.read_text() for path in Path("log").glob("*/*.log")}
    assert set(logs) == {"Pop", "BPR"}
    assert "BPR(" in logs["BPR"] and "BPR(" not in logs["Pop"]  # BPR's run did not go to Pop's
    assert root.handlers == []  # the run's handlers are gone after it


def test_looking_up_a_recbole_model_leaves_anomaly_detection_alone() -> None:
    """RecBole's SINE module turns anomaly detection on at import; the lookup turns it back."""
    assert not torch.is_anomaly_enabled()
    get_model("SASRec")  # imports recbole.model.sequential_recommender, SINE included
    with pytest.raises(ConfigError):
        get_model("NoSuchModel")
    assert not torch.is_anomaly_enabled()

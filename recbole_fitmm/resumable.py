"""Resumable training for RecBole trainers: checkpoints, history and a clean stop on divergence.

:class:`CheckpointMixin` goes in front of a RecBole trainer (:mod:`recbole_fitmm.trainer` declares
the classes). Checkpoints (:mod:`recbole_fitmm.checkpoint`): the best-validation weights and a
"last" checkpoint (everything needed to resume: weights, optimizer, epoch, best score and result,
early-stopping counter, history, the random states of python, numpy, torch and the training
dataloader). Cadence: the best weights are kept in memory when validation improves; both files are
written when ``checkpoint_every`` epochs or ``checkpoint_seconds`` seconds have passed since the
last write, and when training ends. They are committed in two phases — the best weights to
``<best>.pending``, then the last checkpoint naming the best epoch, then the pending file renamed
over the best one — so that a crash at any point leaves a best file that matches the last
checkpoint (:meth:`CheckpointMixin.resume_checkpoint` completes or discards a pending file).

A loss that stops being finite ends training like the FITMM release does: a warning names the
epoch and the loss parts, and the run is tested with its best checkpoint (``diverged`` in the
result); without any best checkpoint there is nothing to test.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch

from recbole_fitmm.checkpoint import (
    LAST_SUFFIX,
    capture_rng,
    check_dataset,
    load_weights,
    plain_result,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import CheckpointError
from recbole_fitmm.provenance import build_provenance, sidecar_path

#: Configuration keys that may differ between an interrupted run and its resumption.
RESUME_FREE_KEYS = frozenset(
    {
        "epochs",
        "resume_from",
        "state",
        "show_progress",
        "checkpoint_dir",
        "log_wandb",
        "checkpoint_every",
        "checkpoint_seconds",
        "graph_cache_dir",
    }
)
PENDING_SUFFIX = ".pending"


class Diverged(Exception):
    """The training loss stopped being finite (raised inside an epoch, handled by ``fit``).

    Args:
        parts: Loss part name -> value summed over the epoch so far (non-finite ones included).
    """

    def __init__(self, parts: dict[str, float]) -> None:
        super().__init__(parts)
        self.parts = parts


def _cpu_copy(state: Any) -> Any:
    """A detached CPU copy of tensors inside dicts/lists (other values unchanged)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _cpu_copy(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(value) for value in state)
    return state


class CheckpointMixin:
    """Checkpoints, history and divergence handling for a RecBole trainer (module docstring).

    Attributes:
        saved_model_file: Path of the best-validation checkpoint.
        last_model_file: Path of the "last" checkpoint (resume from this one).
        history: One entry per validation (epoch, train loss, valid metrics, diagnostics).
        diverged: ``None``, or ``{"epoch", "loss_parts"}`` when a non-finite loss ended training.
        resumed_train_seconds: Training seconds spent before this process (restored on resume).
    """

    def __init__(self, config: Any, model: Any) -> None:
        super().__init__(config, model)  # type: ignore[call-arg]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dataset = str(config["dataset"]).replace(os.sep, "_")
        stem = f"{config['model']}-{dataset}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.saved_model_file = os.path.join(self.checkpoint_dir, stem + ".pth")
        self.last_model_file = os.path.join(self.checkpoint_dir, stem + LAST_SUFFIX)
        self.history: list[dict[str, Any]] = []
        self.diverged: dict[str, Any] | None = None
        self.resumed_train_seconds = 0.0
        self.best_epoch: int | None = None
        self._provenance: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._train_generator: Any = None
        self._finished = False
        self._saving = True
        self._epoch = 0
        self._fit_start = time.perf_counter()
        self._best_state: dict[str, Any] | None = None
        self._last_flush = time.perf_counter()
        every = config["checkpoint_every"]
        seconds = config["checkpoint_seconds"]
        self._every = int(every) if every is not None else 0
        self._seconds = float(seconds) if seconds is not None else 0.0

    # ------------------------------------------------------------------ provenance
    @property
    def provenance(self) -> dict[str, Any]:
        """The run's provenance record (computed once; hashes the dataset files)."""
        if self._provenance is None:
            self._provenance = build_provenance(self.config, dataset_fingerprint(self.config))
        return self._provenance

    def _check_checkpoint(self, checkpoint: dict[str, Any], path: str | Path) -> None:
        saved_model = checkpoint["provenance"]["model"]
        if saved_model != self.config["model"]:
            raise CheckpointError(
                f"checkpoint {path} holds a {saved_model} model, not {self.config['model']}"
            )
        check_dataset(checkpoint, path, self.provenance["dataset_fingerprint"])

    # ------------------------------------------------------------------ writing
    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """Keep the current weights as the best ones (written at the next flush)."""
        if not self._saving or (not self.config["single_spec"] and self.config["local_rank"]):
            return
        self.best_epoch = int(epoch)
        self._best_state = {
            "kind": "best",
            "epoch": int(epoch),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": _cpu_copy(self.model.state_dict()),
            "other_parameter": _cpu_copy(self.model.other_parameter()),
        }

    def _flush(self, epoch: int, stopped: bool, verbose: bool = False) -> None:
        """Write the pending best weights and the last checkpoint (two-phase, module docstring)."""
        if not self._saving or (not self.config["single_spec"] and self.config["local_rank"]):
            return
        best = Path(self.saved_model_file)
        pending = best.with_name(best.name + PENDING_SUFFIX)
        if self._best_state is not None:
            save_checkpoint(pending, {**self._best_state, "provenance": self.provenance})
        state = {
            "kind": "last",
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": plain_result(self.best_valid_result),
            "best_epoch": self.best_epoch,
            "best_file": best.name if self.best_epoch is not None else None,
            "stopped": bool(stopped),
            "diverged": self.diverged,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self._train_generator),
            "train_seconds": self.resumed_train_seconds + time.perf_counter() - self._fit_start,
            "history": self.history,
            "provenance": self.provenance,
        }
        save_checkpoint(self.last_model_file, state)
        if self._best_state is not None:
            _commit(pending, best)
            self._best_state = None
        self._last_flush = time.perf_counter()
        if verbose:
            self.logger.info(f"Saved checkpoints: {self.last_model_file}")

    def _due(self, epoch: int) -> bool:
        """True when the cadence asks for a write after ``epoch``."""
        if self._every > 0 and (epoch + 1 - self.start_epoch) % self._every == 0:
            return True
        return time.perf_counter() - self._last_flush >= self._seconds

    # ------------------------------------------------------------------ training loop hooks
    def fit(
        self,
        train_data: Any,
        valid_data: Any = None,
        verbose: bool = True,
        saved: bool = True,
        show_progress: bool = False,
        callback_fn: Any = None,
    ) -> tuple[float, dict[str, float] | None]:
        """RecBole's ``fit`` with the plugin's checkpoint cadence and divergence handling.

        Args:
            train_data: Training dataloader.
            valid_data: Validation dataloader (``None``: no validation, no early stopping).
            verbose: Log progress.
            saved: Write checkpoints.
            show_progress: Show progress bars.
            callback_fn: Called as ``callback_fn(epoch, valid_score)`` after each evaluation.

        Returns:
            ``(best_valid_score, best_valid_result)``.
        """
        self._saving = saved
        self._fit_start = self._last_flush = time.perf_counter()
        self._train_generator = getattr(train_data, "generator", None)
        if self._pending_rng is not None:
            restore_rng(self._pending_rng, self._train_generator)
            self._pending_rng = None
        if self._finished:
            self.logger.info("The resumed run had already finished; nothing left to train.")
            return self.best_valid_score, self.best_valid_result

        def after_evaluation(epoch_idx: int, valid_score: float) -> None:
            if self._due(epoch_idx):
                self._flush(epoch_idx, stopped=False, verbose=verbose)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)

        try:
            super().fit(  # type: ignore[misc]
                train_data, valid_data, verbose, saved, show_progress, after_evaluation
            )
        except Diverged as err:
            self.diverged = {"epoch": self._epoch, "loss_parts": err.parts}
            parts = ", ".join(f"{name} {value:.6g}" for name, value in err.parts.items())
            self.logger.warning(
                f"{self.config['model']}: the training loss is not finite in epoch {self._epoch} "
                f"({parts}); training stops and the run is tested with its best checkpoint "
                f"(epoch {self.best_epoch})"
            )
        self._flush(self._epoch, stopped=True, verbose=verbose)
        return self.best_valid_score, self.best_valid_result

    def _check_nan(self, loss: torch.Tensor) -> None:
        """RecBole's per-batch check (trainers with their own epoch loop): stop on NaN."""
        if torch.isnan(loss):
            raise Diverged({"loss": float(loss)})

    def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> tuple[float, dict]:
        """RecBole's validation, recorded in :attr:`history` with the model's diagnostics."""
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)  # type: ignore[misc]
        loss = self.train_loss_dict.get(self._epoch)
        entry: dict[str, Any] = {
            "epoch": self._epoch,
            "train_loss": None if loss is None else float(loss),
            "valid_score": float(score),
            "valid": plain_result(result),
        }
        diagnostics = getattr(self.model, "diagnostics", None)
        if diagnostics is not None:
            entry["diagnostics"] = diagnostics()
        self.history.append(entry)
        return score, result

    def _train_epoch(
        self, train_data: Any, epoch_idx: int, loss_func: Any = None, show_progress: bool = False
    ) -> Any:
        self._epoch = epoch_idx
        start_epoch = getattr(self.model, "on_epoch_start", None)  # epoch-dependent schedules
        if start_epoch is not None:
            start_epoch(epoch_idx)
        with warnings.catch_warnings():
            # RecBole's own epoch loop (NCL, RaCT, RecVAE) builds a deprecated GradScaler
            warnings.filterwarnings("ignore", r".*torch\.cuda\.amp\.GradScaler", FutureWarning)
            loss = super()._train_epoch(  # type: ignore[misc]
                train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
            )
        if self.eval_step <= 0 or (epoch_idx + 1) % self.eval_step:  # no evaluation follows
            if self._due(epoch_idx):
                self._flush(epoch_idx, stopped=False)
        return loss

    # ------------------------------------------------------------------ reading
    def resume_checkpoint(self, resume_file: str | Path) -> None:
        """Continue an interrupted run from its last checkpoint.

        Args:
            resume_file: A ``*.last.pth`` checkpoint of the same model on the same data, made
                with the same configuration (up to :data:`RESUME_FREE_KEYS`).

        Raises:
            CheckpointError: Unreadable file, a best (not last) checkpoint, another model, other
                data, another configuration (the message names the keys), or a missing or
                inconsistent best checkpoint beside it.
        """
        path = Path(resume_file)
        # Read on the CPU: the random-generator states must stay there (numpy reads them);
        # the weights and the optimizer state move to the model's device as they are loaded.
        checkpoint = read_checkpoint(path, map_location="cpu")
        if checkpoint.get("kind") != "last":
            raise CheckpointError(
                f"checkpoint {path} holds best weights only; resume from the *{LAST_SUFFIX} "
                "checkpoint beside it"
            )
        self._check_checkpoint(checkpoint, path)
        changed = config_changes(checkpoint["provenance"]["config_input"], self.provenance)
        if changed:
            raise CheckpointError(
                f"checkpoint {path} was made with another configuration ({', '.join(changed)}); "
                "resuming would not continue the same run"
            )
        load_weights(self.model, checkpoint, path)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"checkpoint {path}: optimizer state does not fit ({err})"
            ) from None
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint["best_valid_result"]
        self.best_epoch = checkpoint.get("best_epoch")
        self.diverged = checkpoint.get("diverged")
        self._pending_rng = checkpoint["rng"]
        self.resumed_train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.history = list(checkpoint.get("history", []))
        self._finished = checkpoint["stopped"] or self.start_epoch >= self.epochs
        self.last_model_file = str(path)
        stem = path.name[: -len(LAST_SUFFIX)]
        best = path.with_name(checkpoint["best_file"] or stem + ".pth")
        self.saved_model_file = str(best)
        _settle_best(best, self.best_epoch, path)
        self.logger.info(f"Resuming {path} from epoch {self.start_epoch}")

    def evaluate(
        self,
        eval_data: Any,
        load_best_model: bool = True,
        model_file: str | None = None,
        show_progress: bool = False,
    ) -> dict[str, float] | None:
        """RecBole's ``evaluate``; the best weights are read with the safe loader.

        Args:
            eval_data: Evaluation dataloader.
            load_best_model: Load the best checkpoint first.
            model_file: Checkpoint to load instead of the run's best one.
            show_progress: Show a progress bar.

        Returns:
            Metric name -> value, or ``None`` without data.

        Raises:
            CheckpointError: The checkpoint is unreadable or belongs to other data.
        """
        if not eval_data:
            return None
        if load_best_model:
            path = model_file or self.saved_model_file
            checkpoint = read_checkpoint(path, map_location=self.device)
            self._check_checkpoint(checkpoint, path)
            load_weights(self.model, checkpoint, path)
            self.logger.info(f"Loaded best weights from {path}")
        return super().evaluate(  # type: ignore[misc]
            eval_data, load_best_model=False, show_progress=show_progress
        )


def config_changes(saved: dict[str, Any], provenance: dict[str, Any]) -> list[str]:
    """Keys (outside :data:`RESUME_FREE_KEYS`) whose values differ between two runs.

    Args:
        saved: ``config_input`` of a checkpoint's provenance.
        provenance: The current run's provenance.

    Returns:
        Sorted key names.
    """
    current = provenance["config_input"]
    return sorted(
        key
        for key in set(saved) | set(current)
        if key not in RESUME_FREE_KEYS and saved.get(key) != current.get(key)
    )


def _commit(pending: Path, best: Path) -> None:
    """Rename a pending best checkpoint (and its sidecar) over the committed one."""
    os.replace(pending, best)
    pending_side, best_side = sidecar_path(pending), sidecar_path(best)
    if pending_side.is_file():
        os.replace(pending_side, best_side)


def _settle_best(best: Path, best_epoch: int | None, last: Path) -> None:
    """Finish or discard a two-phase write interrupted before the resumed run.

    Raises:
        CheckpointError: The best checkpoint the last one names is missing or from another epoch.
    """
    pending = best.with_name(best.name + PENDING_SUFFIX)
    if pending.is_file():
        epoch = read_checkpoint(pending).get("epoch")
        if best_epoch is not None and epoch == best_epoch:
            _commit(pending, best)
        else:
            pending.unlink()
            sidecar_path(pending).unlink(missing_ok=True)
    if best_epoch is None:
        return
    if not best.is_file():
        raise CheckpointError(
            f"checkpoint {last} needs its best checkpoint {best}, which is missing"
        )
    epoch = read_checkpoint(best).get("epoch")
    if epoch != best_epoch:
        raise CheckpointError(
            f"best checkpoint {best} holds epoch {epoch}, but {last} names epoch {best_epoch}"
        )

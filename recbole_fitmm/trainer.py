"""The plugin's trainer: RecBole's training loop with safe, atomic, resumable checkpoints.

:class:`CheckpointMixin` changes only how checkpoints are written and read; the training loop,
early stopping and evaluation are RecBole's. :func:`recbole_fitmm.utils.get_trainer` returns a
trainer with this mixin for every general model, plugin and built-in (RecBole's special trainers
such as ``NCLTrainer`` get it mixed in).

What it writes (``recbole_fitmm.checkpoint``): the best-validation checkpoint whenever the
validation score improves, and a "last" checkpoint after every epoch (after validation on
evaluation epochs, after training on the others). Both are written atomically, carry a plain-data
provenance record (configuration, versions, dataset fingerprint) and a JSON sidecar.

Exact resumption: the last checkpoint holds the model, the optimizer, the epoch, the best score and
result, the early-stopping counter, and the random states of python, numpy (RecBole's negative
sampler), torch and the training dataloader's own shuffling generator (RecBole seeds one
``torch.Generator`` per dataloader with ``seed`` and draws every epoch's permutation from it).
``resume_checkpoint`` restores all of them, so a resumed run sees the same batches and negatives
as an uninterrupted one and ends with the same weights and metrics.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from recbole.trainer import TraditionalTrainer as RecBoleTraditionalTrainer
from recbole.trainer import Trainer as RecBoleTrainer

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
from recbole_fitmm.errors import CheckpointError
from recbole_fitmm.provenance import build_provenance

#: Configuration keys that may differ between an interrupted run and its resumption.
RESUME_FREE_KEYS = frozenset(
    {"epochs", "resume_from", "state", "show_progress", "checkpoint_dir", "log_wandb"}
)


class CheckpointMixin:
    """Safe, atomic, resumable checkpoints for a RecBole ``Trainer`` (see the module docstring).

    Attributes:
        saved_model_file: Path of the best-validation checkpoint.
        last_model_file: Path of the "last" checkpoint (resume from this one).
    """

    def __init__(self, config: Any, model: Any) -> None:
        super().__init__(config, model)  # type: ignore[call-arg]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dataset = str(config["dataset"]).replace(os.sep, "_")
        stem = f"{config['model']}-{dataset}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.saved_model_file = os.path.join(self.checkpoint_dir, stem + ".pth")
        self.last_model_file = os.path.join(self.checkpoint_dir, stem + LAST_SUFFIX)
        self._provenance: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._train_generator: Any = None
        self._finished = False
        self._saving = True
        self._validating = True
        self._epoch = 0
        #: Training seconds spent before this process (restored on resume).
        self.resumed_train_seconds = 0.0
        #: One entry per validation: epoch, train loss, valid metrics, model diagnostics.
        self.history: list[dict[str, Any]] = []
        self._fit_start = time.perf_counter()

    # ------------------------------------------------------------------ provenance
    @property
    def provenance(self) -> dict[str, Any]:
        """The run's provenance record (computed once; hashes the dataset files)."""
        if self._provenance is None:
            self._provenance = build_provenance(self.config)
        return self._provenance

    def _check_checkpoint(self, checkpoint: dict[str, Any], path: str | Path) -> None:
        saved_model = checkpoint["provenance"]["model"]
        if saved_model != self.config["model"]:
            raise CheckpointError(
                f"checkpoint {path} holds a {saved_model} model, not {self.config['model']}"
            )
        check_dataset(checkpoint, path, self.provenance["dataset_fingerprint"])

    # ------------------------------------------------------------------ writing
    def _common_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": int(epoch),
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "provenance": self.provenance,
        }

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        """Write the best-validation checkpoint (and, without validation, the last one too)."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        save_checkpoint(path, {"kind": "best", **self._common_state(epoch)})
        if verbose:
            self.logger.info(f"Saving best: {path}")
        if not self._validating:
            self._save_last(epoch, verbose=verbose)

    def _save_last(self, epoch: int, verbose: bool = True) -> None:
        """Write everything needed to resume after ``epoch``."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        best = Path(self.saved_model_file)
        state = {
            "kind": "last",
            **self._common_state(epoch),
            "best_valid_result": plain_result(self.best_valid_result),
            "stopped": bool(self._validating and self.cur_step > self.stopping_step),
            "best_file": best.name if best.is_file() else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self._train_generator),
            "train_seconds": self.resumed_train_seconds + time.perf_counter() - self._fit_start,
            "history": self.history,
        }
        save_checkpoint(self.last_model_file, state)
        if verbose:
            self.logger.info(f"Saving last: {self.last_model_file}")

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
        """RecBole's ``fit``, writing a last checkpoint every epoch when ``saved``.

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
        self._fit_start = time.perf_counter()
        self._validating = bool(valid_data) and self.eval_step > 0
        self._train_generator = getattr(train_data, "generator", None)
        if self._pending_rng is not None:
            restore_rng(self._pending_rng, self._train_generator)
            self._pending_rng = None
        if self._finished:
            self.logger.info("The resumed run had already finished; nothing left to train.")
            return self.best_valid_score, self.best_valid_result

        def after_evaluation(epoch_idx: int, valid_score: float) -> None:
            if saved:
                self._save_last(epoch_idx, verbose=verbose)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)

        return super().fit(  # type: ignore[misc]
            train_data, valid_data, verbose, saved, show_progress, after_evaluation
        )

    def _valid_epoch(self, valid_data: Any, show_progress: bool = False) -> tuple[float, dict]:
        """RecBole's validation, recorded in :attr:`history` with the model's diagnostics."""
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)  # type: ignore[misc]
        epoch = self._epoch
        loss = self.train_loss_dict.get(epoch)
        entry: dict[str, Any] = {
            "epoch": epoch,
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
        loss = super()._train_epoch(  # type: ignore[misc]
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
        evaluates = (epoch_idx + 1) % max(self.eval_step, 1) == 0
        if self._saving and self._validating and not evaluates:
            self._save_last(epoch_idx, verbose=False)
        return loss

    # ------------------------------------------------------------------ reading
    def resume_checkpoint(self, resume_file: str | Path) -> None:
        """Continue an interrupted run from its last checkpoint.

        Args:
            resume_file: A ``*.last.pth`` checkpoint of the same model on the same data.

        Raises:
            CheckpointError: Unreadable file, a best (not last) checkpoint, another model, other
                data, or a missing best checkpoint beside it.
        """
        path = Path(resume_file)
        checkpoint = read_checkpoint(path, map_location=self.device)
        if checkpoint.get("kind") != "last":
            raise CheckpointError(
                f"checkpoint {path} holds best weights only; resume from the *{LAST_SUFFIX} "
                "checkpoint beside it"
            )
        self._check_checkpoint(checkpoint, path)
        self._warn_config_changes(checkpoint["provenance"]["config_input"], path)
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
        self._pending_rng = checkpoint["rng"]
        self.resumed_train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.history = list(checkpoint.get("history", []))
        self._finished = checkpoint["stopped"] or self.start_epoch >= self.epochs
        self.last_model_file = str(path)
        if checkpoint["best_file"] is not None:
            best = path.parent / checkpoint["best_file"]
            if not best.is_file():
                raise CheckpointError(
                    f"checkpoint {path} needs its best checkpoint {best}, which is missing"
                )
            self.saved_model_file = str(best)
        else:
            self.saved_model_file = str(path.with_name(path.name[: -len(LAST_SUFFIX)] + ".pth"))
        self.logger.info(f"Resuming {path} from epoch {self.start_epoch}")

    def _warn_config_changes(self, saved: dict[str, Any], path: Path) -> None:
        current = self.provenance["config_input"]
        changed = sorted(
            key
            for key in set(saved) | set(current)
            if key not in RESUME_FREE_KEYS and saved.get(key) != current.get(key)
        )
        if changed:
            self.logger.warning(
                f"resuming {path} with a different configuration ({', '.join(changed)}); "
                "the result will not match an uninterrupted run"
            )

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


class Trainer(CheckpointMixin, RecBoleTrainer):
    """RecBole's ``Trainer`` with the plugin's checkpoints (every general model without its own)."""


class TraditionalTrainer(CheckpointMixin, RecBoleTraditionalTrainer):
    """RecBole's ``TraditionalTrainer`` (one epoch: Pop, ItemKNN, EASE...) with the plugin's
    checkpoints."""


_MIXED: dict[type, type] = {RecBoleTrainer: Trainer, RecBoleTraditionalTrainer: TraditionalTrainer}


def with_checkpoints(trainer: type) -> type:
    """``trainer`` with :class:`CheckpointMixin` in front (returned unchanged if it has it).

    Args:
        trainer: A subclass of RecBole's ``Trainer``.

    Returns:
        A class named like ``trainer``; the same class for the same input.
    """
    if issubclass(trainer, CheckpointMixin):
        return trainer
    if trainer not in _MIXED:
        _MIXED[trainer] = type(
            trainer.__name__,
            (CheckpointMixin, trainer),
            {
                "__doc__": f"{trainer.__name__} with the plugin's checkpoints.",
                "__module__": __name__,
            },
        )
    return _MIXED[trainer]

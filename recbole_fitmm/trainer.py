"""The plugin's trainers and :func:`get_trainer`.

Every trainer of a general or traditional model is one of the classes declared here: RecBole's
trainer with :class:`~recbole_fitmm.resumable.CheckpointMixin` in front (checkpoints, history,
divergence handling); models on the plain trainer also get :class:`SyncFreeEpoch`, a training
epoch without per-batch host synchronisation. Other model types keep RecBole's trainer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from recbole.trainer import NCLTrainer as RecBoleNCLTrainer
from recbole.trainer import RaCTTrainer as RecBoleRaCTTrainer
from recbole.trainer import RecVAETrainer as RecBoleRecVAETrainer
from recbole.trainer import TraditionalTrainer as RecBoleTraditionalTrainer
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import ModelType, set_color
from recbole.utils import get_trainer as recbole_get_trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_fitmm.registry import is_plugin_model
from recbole_fitmm.resumable import CheckpointMixin, Diverged


class SyncFreeEpoch:
    """A training epoch without per-batch host synchronisation (for the plain trainer).

    RecBole's epoch calls ``loss.item()`` and ``torch.isnan(loss)`` after every batch, each a
    device-to-host synchronisation on a GPU. Here the batch losses (and the model's
    ``last_loss_parts``, when it records them) are summed on the device and checked once per epoch;
    a non-finite sum raises :class:`Diverged`. One ``GradScaler`` lives across epochs; gradients
    are unscaled before clipping. Otherwise the same steps in the same order as RecBole's.
    """

    def _train_epoch(
        self, train_data: Any, epoch_idx: int, loss_func: Any = None, show_progress: bool = False
    ) -> Any:
        model, optimizer = self.model, self.optimizer  # type: ignore[attr-defined]
        model.train()
        loss_func = loss_func or model.calculate_loss
        if not hasattr(self, "_scaler"):
            self._scaler = torch.amp.GradScaler(enabled=self.enable_scaler)  # type: ignore[attr-defined]
        device = self.device  # type: ignore[attr-defined]
        iterator = (
            tqdm(
                train_data,
                total=len(train_data),
                ncols=100,
                desc=set_color(f"Train {epoch_idx:>5}", "pink"),
            )
            if show_progress
            else train_data
        )
        total: Any = None
        parts: dict[str, torch.Tensor] = {}
        for interaction in iterator:
            interaction = interaction.to(device)
            optimizer.zero_grad()
            with torch.autocast(device_type=device.type, enabled=self.enable_amp):  # type: ignore[attr-defined]
                losses = loss_func(interaction)
            if isinstance(losses, tuple):
                loss = sum(losses)
                step = torch.stack([part.detach().float() for part in losses])
            else:
                loss = losses
                step = losses.detach().float()
            total = step if total is None else total + step
            for name, value in (getattr(model, "last_loss_parts", None) or {}).items():
                parts[name] = parts[name] + value if name in parts else value
            self._scaler.scale(loss).backward()
            if self.clip_grad_norm:  # type: ignore[attr-defined]
                self._scaler.unscale_(optimizer)
                clip_grad_norm_(model.parameters(), **self.clip_grad_norm)  # type: ignore[attr-defined]
            self._scaler.step(optimizer)
            self._scaler.update()
        if total is None:
            return 0.0
        values = total.tolist()  # the epoch's one synchronisation
        flat = values if isinstance(values, list) else [values]
        if not all(math.isfinite(value) for value in flat):
            named = {name: float(value) for name, value in parts.items()}
            if not named:
                named = (
                    {f"loss{i + 1}": v for i, v in enumerate(flat)}
                    if len(flat) > 1
                    else {"loss": flat[0]}
                )
            raise Diverged(named)
        return tuple(values) if isinstance(values, list) else values


class Trainer(CheckpointMixin, SyncFreeEpoch, RecBoleTrainer):
    """RecBole's ``Trainer`` with the plugin's checkpoints and epoch (general models)."""


class TraditionalTrainer(CheckpointMixin, SyncFreeEpoch, RecBoleTraditionalTrainer):
    """RecBole's ``TraditionalTrainer`` (one epoch: Pop, ItemKNN, EASE...) with checkpoints."""


class NCLTrainer(CheckpointMixin, RecBoleNCLTrainer):
    """RecBole's ``NCLTrainer`` (E-step every ``m_step`` epochs) with the plugin's checkpoints."""


class RaCTTrainer(CheckpointMixin, RecBoleRaCTTrainer):
    """RecBole's ``RaCTTrainer`` (pre-training stages) with the plugin's checkpoints."""


class RecVAETrainer(CheckpointMixin, RecBoleRecVAETrainer):
    """RecBole's ``RecVAETrainer`` (alternating encoder/decoder epochs) with checkpoints."""


class FITMMTrainer(Trainer):
    """The plugin trainer with a fused (single-kernel) Adam for FITMM.

    FITMM trains the raw feature tables (7050 × 4096 floats for Baby's images); RecBole's default
    Adam updates them tensor by tensor with a chain of elementwise kernels, about 9× slower on CPU
    than ``torch.optim.Adam(fused=True)``, which computes the same update. The model's
    ``optimizer_groups`` give the feature tables their own learning rate (``feature_lr_scale``).
    Other optimisers and devices without a fused Adam fall back to RecBole's choice.
    """

    def _build_optimizer(self, **kwargs: Any) -> torch.optim.Optimizer:
        learner = kwargs.get("learner", self.learner)
        params = list(kwargs.pop("params", self.model.parameters()))
        fusable = all(param.device.type in ("cpu", "cuda") for param in params)
        if learner.lower() != "adam" or not fusable:
            return super()._build_optimizer(params=params, **kwargs)
        lr = kwargs.get("learning_rate", self.learning_rate)
        groups = [
            {"params": group["params"], "lr": lr * group["lr_scale"]}
            for group in self.model.optimizer_groups()
        ]
        return torch.optim.Adam(
            groups, lr=lr, weight_decay=kwargs.get("weight_decay", self.weight_decay), fused=True
        )


#: Trainers by model name; RecBole's special trainers of general models get theirs.
MODEL_TRAINERS: dict[str, type] = {
    "FITMM": FITMMTrainer,
    "NCL": NCLTrainer,
    "RaCT": RaCTTrainer,
    "RecVAE": RecVAETrainer,
}


def get_trainer(model_type: Any, model_name: str) -> type:
    """The trainer class for a model.

    Args:
        model_type: The model's ``ModelType``.
        model_name: The model's name.

    Returns:
        A trainer class taking ``(config, model)``: from :data:`MODEL_TRAINERS`, else
        :class:`Trainer` for general models (plugin and RecBole), :class:`TraditionalTrainer` for
        traditional ones, and RecBole's own trainer for other model types.
    """
    if model_name in MODEL_TRAINERS:
        return MODEL_TRAINERS[model_name]
    if is_plugin_model(model_name) or model_type == ModelType.GENERAL:
        return Trainer
    if model_type == ModelType.TRADITIONAL:
        return TraditionalTrainer
    return recbole_get_trainer(model_type, model_name)

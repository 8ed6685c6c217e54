"""Per-user test metrics of a trained run, with the trainer's own masking and RecBole's metrics.

The comparison (:mod:`recbole_fitmm.compare`) scores every run's best checkpoint user by user;
the paired tests and the user-activity groups of its table are computed from these values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.evaluator.collector import Collector
from recbole.evaluator.metrics import NDCG, Recall
from recbole.utils import init_seed

from recbole_fitmm.compare_table import PerUser
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.quick_start import build_model, create_dataset, data_preparation
from recbole_fitmm.trainer import get_trainer


def per_user_metrics(trainer: Any, eval_data: Any, ks: tuple[int, ...] = (10, 20)) -> PerUser:
    """Recall@K and NDCG@K of every evaluated user, with the trainer's masking.

    Scores come from the trainer's own full-sort step (PAD and the loader's history items set to
    ``-inf``: the plugin's ``test_mask`` on the test loader); top-K and hit matrices come from
    RecBole's ``Collector``, the per-user values from RecBole's ``Recall``/``NDCG``. Their means
    equal ``trainer.evaluate`` up to rounding.

    Args:
        trainer: A trainer holding the model to evaluate.
        eval_data: A full-sort evaluation dataloader.
        ks: Cut-offs; each must be in the configuration's ``topk``.

    Returns:
        The users (raw ids) and one array per ``recall@K`` / ``ndcg@K``.
    """
    config = trainer.config
    if any(k not in config["topk"] for k in ks):
        raise ConfigError(f"per-user metrics need topk to include {list(ks)}")
    dataset = eval_data._dataset
    uid_field = config["USER_ID_FIELD"]
    trainer.model.eval()
    trainer.tot_item_num = dataset.item_num
    if trainer.item_tensor is None:  # used by models without full_sort_predict
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    collector = Collector(config)
    users = []
    with torch.no_grad():
        for batch in eval_data:
            interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
            collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
            users.append(interaction[uid_field].cpu().numpy())
    struct = collector.get_data_struct()
    recall = Recall(config)
    pos_index, pos_len = recall.used_info(struct)
    curves = {
        "recall": recall.metric_info(pos_index, pos_len),
        "ndcg": NDCG(config).metric_info(pos_index, pos_len),
    }
    values = {
        f"{name}@{k}": curve[:, k - 1].astype(np.float64)
        for name, curve in curves.items()
        for k in ks
    }
    ids = np.concatenate(users)
    return PerUser(users=np.asarray(dataset.id2token(uid_field, ids)).astype(str), values=values)


def evaluate_checkpoint(config: Any, checkpoint: str | Path) -> tuple[dict[str, float], PerUser]:
    """Rebuild a run's data and model, load its best checkpoint and score the test split per user.

    Args:
        config: The run's resolved ``Config`` (as returned by ``run_recbole_fitmm``).
        checkpoint: Its best-valid checkpoint.

    Returns:
        The test result of ``trainer.evaluate`` and the per-user metrics.
    """
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    # Graphs are built from the dataset the model receives: it must be the training split.
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=True, model_file=str(checkpoint))
    per_user = per_user_metrics(trainer, test_data)
    train = train_data._dataset  # each user's number of training interactions (activity groups)
    rows = train.token2id(train.uid_field, per_user.users)
    per_user.train_counts = np.diff(train.inter_matrix(form="csr").indptr)[rows].astype(np.int64)
    return {k: float(v) for k, v in result.items()}, per_user

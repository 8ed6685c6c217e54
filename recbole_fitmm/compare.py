"""One-command side-by-side comparison of several models on one dataset over several seeds.

Every (model, seed) pair is one :func:`~recbole_fitmm.quick_start.run_recbole_fitmm` run under the
plugin's protocol (best epoch on valid Recall@20, test once with the best-valid weights and the
``test_mask``). Its best checkpoint is then scored user by user on the test split with the
trainer's own masking and RecBole's collector and metrics (:func:`per_user_metrics`); the mean must
reproduce the run's test Recall@20. The table gives mean ± sample std over seeds; the **best model
has the highest mean valid Recall@20** (test never selects anything) and is compared with every
other model by a paired test over per-user test Recall@20 (users aligned by raw id, each user's
value averaged over seeds). Files in ``out_dir``, written atomically: ``summary.md``,
``summary.csv``, ``per_seed.csv`` (rewritten after every run) and ``per_user_recall@20.npz``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.evaluator.collector import Collector
from recbole.evaluator.metrics import NDCG, Recall
from recbole.utils import init_seed
from scipy import stats

from recbole_fitmm.config import Config
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write, atomic_write_text
from recbole_fitmm.quick_start import data_preparation, run_recbole_fitmm
from recbole_fitmm.utils import create_dataset, get_model, get_trainer

SELECT_METRIC = "recall@20"
TEST_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PAIRED_TESTS = ("wilcoxon", "ttest")
LABELS = {"recall": "R", "ndcg": "N"}


@dataclass
class PerUser:
    """Per-user test metrics of one run.

    Attributes:
        users: Raw user ids (tokens) [n_users], in evaluation order.
        values: Metric name (e.g. ``recall@20``) -> float64 array [n_users].
    """

    users: np.ndarray
    values: dict[str, np.ndarray]


@dataclass
class RunRecord:
    """The outcome of one (model, seed) run."""

    model: str
    seed: int
    valid: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    per_user: PerUser = field(repr=False)


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
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=True, model_file=str(checkpoint))
    return {k: float(v) for k, v in result.items()}, per_user_metrics(trainer, test_data)


def run_one(
    model: str,
    dataset: str,
    seed: int,
    config_file_list: list[str] | None,
    config_dict: dict[str, Any],
    keep_checkpoints: bool = False,
) -> RunRecord:
    """Train, select on valid and test one model with one seed, then score users one by one.

    Args:
        model: Model name (plugin or RecBole).
        dataset: Dataset name.
        seed: Seed of the run.
        config_file_list: Extra yaml files.
        config_dict: Extra configuration values (``seed`` is set here).
        keep_checkpoints: Keep the run's checkpoint files (deleted otherwise).

    Returns:
        The run's record.

    Raises:
        RuntimeError: The per-user re-evaluation does not reproduce the run's test Recall@20.
    """
    result = run_recbole_fitmm(model, dataset, config_file_list, {**config_dict, "seed": seed})
    checkpoint = result["checkpoint"]
    test, per_user = evaluate_checkpoint(result["config"], checkpoint)
    mean = float(per_user.values[SELECT_METRIC].mean())
    if abs(mean - result["test_result"][SELECT_METRIC]) > 1e-4 or test != result["test_result"]:
        raise RuntimeError(
            f"{model} seed {seed}: per-user test {SELECT_METRIC} {mean:.5f} / re-evaluation {test} "
            f"disagree with the run's test result {result['test_result']}"
        )
    if not keep_checkpoints:
        for path in (checkpoint, result.get("last_checkpoint")):
            for file in (path, path and f"{path}.json"):  # the checkpoint and its sidecar
                if file and os.path.exists(file):
                    os.remove(file)
    return RunRecord(
        model=model,
        seed=seed,
        valid=result["best_valid_result"],
        test=result["test_result"],
        train_seconds=result["train_seconds"],
        per_user=per_user,
    )


def paired_pvalue(best: np.ndarray, other: np.ndarray, method: str = "wilcoxon") -> float:
    """Two-sided p-value of a paired test between two models' per-user values.

    Args:
        best: Per-user values of the best model [n].
        other: Per-user values of the other model [n], same users in the same order.
        method: ``wilcoxon`` (signed-rank) or ``ttest`` (paired t-test).

    Returns:
        p in [0, 1]; 1.0 when the two are identical for every user.
    """
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    diff = np.asarray(best, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    if not np.any(diff):
        return 1.0
    if method == "wilcoxon":
        p = stats.wilcoxon(diff).pvalue
    else:
        p = stats.ttest_rel(best, other).pvalue
    return float(np.clip(p, 0.0, 1.0)) if np.isfinite(p) else 1.0


def seed_averaged(records: list[RunRecord], metric: str = SELECT_METRIC) -> tuple[np.ndarray, dict]:
    """Per-user ``metric`` of every model averaged over its seeds, users aligned by raw id.

    Args:
        records: All runs.
        metric: Per-user metric name.

    Returns:
        The users common to every run (sorted) and model -> float64 array over those users.
    """
    users = records[0].per_user.users
    for record in records[1:]:
        users = np.intersect1d(users, record.per_user.users)
    users = np.unique(users)
    averaged: dict[str, list[np.ndarray]] = {}
    for record in records:
        order = np.argsort(record.per_user.users)
        index = order[np.searchsorted(record.per_user.users, users, sorter=order)]
        averaged.setdefault(record.model, []).append(record.per_user.values[metric][index])
    return users, {model: np.mean(values, axis=0) for model, values in averaged.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(records: list[RunRecord], method: str = "wilcoxon") -> list[dict[str, Any]]:
    """One row per model: means, standard deviations, best flag and p-value against the best.

    Args:
        records: All runs (at least one).
        method: Paired test, see :func:`paired_pvalue`.

    Returns:
        Rows in model order of first appearance, with keys ``model``, ``n_seeds``,
        ``valid_recall@20_mean``/``_std``, ``test_<metric>_mean``/``_std``,
        ``train_seconds_mean``/``_std``, ``best`` and ``p_value`` (``None`` for the best).
    """
    models = list(dict.fromkeys(record.model for record in records))
    rows = []
    for model in models:
        runs = [record for record in records if record.model == model]
        row: dict[str, Any] = {"model": model, "n_seeds": len(runs)}
        columns = {f"valid_{SELECT_METRIC}": [r.valid[SELECT_METRIC] for r in runs]}
        columns.update({f"test_{m}": [r.test[m] for r in runs] for m in TEST_METRICS})
        columns["train_seconds"] = [r.train_seconds for r in runs]
        for name, values in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
        rows.append(row)
    best = max(rows, key=lambda row: row[f"valid_{SELECT_METRIC}_mean"])
    _, per_user = seed_averaged(records)
    for row in rows:
        row["best"] = row is best
        row["p_value"] = (
            None
            if row is best
            else paired_pvalue(per_user[best["model"]], per_user[row["model"]], method)
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The comparison table in Markdown, preceded by the run's description.

    Args:
        rows: Output of :func:`summarise`.
        header: Key -> value lines printed above the table (dataset, seeds, ...).

    Returns:
        Markdown text.
    """
    lines = [f"- {key}: {value}" for key, value in header.items()]
    metric_heads = [f"test {LABELS[m.split('@')[0]]}@{m.split('@')[1]}" for m in TEST_METRICS]
    heads = ["model", "seeds", "valid R@20", *metric_heads, "train s", "p vs best"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        cells = [f"**{row['model']}** (best)" if row["best"] else row["model"], str(row["n_seeds"])]
        for name in [f"valid_{SELECT_METRIC}", *(f"test_{m}" for m in TEST_METRICS)]:
            cells.append(f"{row[name + '_mean']:.4f} ± {row[name + '_std']:.4f}")
        cells.append(f"{row['train_seconds_mean']:.1f}")
        cells.append("—" if row["p_value"] is None else f"{row['p_value']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    """Rows (dictionaries with the same keys) as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _per_seed_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    return [
        {
            "model": r.model,
            "seed": r.seed,
            f"valid_{SELECT_METRIC}": r.valid[SELECT_METRIC],
            **{f"test_{m}": r.test[m] for m in TEST_METRICS},
            "train_seconds": round(r.train_seconds, 2),
        }
        for r in records
    ]


@dataclass
class Comparison:
    """Result of :func:`compare`: the runs, the summary rows and the written files."""

    records: list[RunRecord]
    rows: list[dict[str, Any]]
    markdown: str
    files: list[Path]


def compare(
    models: list[str],
    dataset: str,
    seeds: list[int],
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    method: str = "wilcoxon",
    keep_checkpoints: bool = False,
) -> Comparison:
    """Run every model with every seed on ``dataset`` and write the comparison table.

    Args:
        models: Model names (plugin and RecBole built-ins), in table order.
        dataset: Dataset name.
        seeds: Seeds; every model runs with each.
        config_file_list: Extra yaml files (e.g. ``data_path`` and the dataset keys).
        config_dict: Extra configuration values for every run.
        out_dir: Output folder (default ``results/compare_<dataset>``); checkpoints go to its
            ``checkpoints/`` unless ``checkpoint_dir`` is configured.
        method: Paired test, ``wilcoxon`` or ``ttest``.
        keep_checkpoints: Keep every run's checkpoint.

    Returns:
        The runs, the table rows and the written files.
    """
    if not models or not seeds:
        raise ConfigError("need at least one model and one seed")
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    out = Path(out_dir or f"results/compare_{dataset}")
    config_dict = dict(config_dict or {})
    config_dict.setdefault("checkpoint_dir", str(out / "checkpoints"))
    for model in models:  # fail before any training on a bad name or protocol
        _check_protocol(Config(model, dataset, config_file_list, config_dict))
    logger = logging.getLogger()
    records: list[RunRecord] = []
    for model in models:
        for seed in seeds:
            record = run_one(model, dataset, seed, config_file_list, config_dict, keep_checkpoints)
            records.append(record)
            logger.info(f"compare: {model} seed {seed}: test {record.test}")
            atomic_write_text(out / "per_seed.csv", render_csv(_per_seed_rows(records)))
    rows = summarise(records, method)
    header = {
        "dataset": dataset,
        "models": ", ".join(models),
        "seeds": ", ".join(map(str, seeds)),
        "selection": "best epoch and best model on valid Recall@20; test evaluated once",
        "paired test": f"{method} over per-user test Recall@20 (seed-averaged) vs the best model",
        "std": "sample standard deviation over seeds",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    markdown = render_markdown(rows, header)
    users, averaged = seed_averaged(records)
    files = [
        atomic_write_text(out / "summary.md", markdown),
        atomic_write_text(out / "summary.csv", render_csv(rows)),
        out / "per_seed.csv",
    ]
    buffer = io.BytesIO()
    np.savez(buffer, users=users, **averaged)
    files.append(atomic_write(out / "per_user_recall@20.npz", lambda f: f.write(buffer.getvalue())))
    return Comparison(records=records, rows=rows, markdown=markdown, files=files)


def _check_protocol(config: Any) -> None:
    """Fail unless the configuration gives what the table needs (full sort, R/N@10/20)."""
    metrics = {m.lower() for m in config["metrics"]}
    if not {"recall", "ndcg"} <= metrics or not {10, 20} <= set(config["topk"]):
        raise ConfigError("the comparison needs metrics Recall and NDCG with topk 10 and 20")
    if config["valid_metric"].lower() != SELECT_METRIC:
        raise ConfigError(
            f"the comparison selects on {SELECT_METRIC}; valid_metric is {config['valid_metric']}"
        )
    if set(config["eval_args"]["mode"].values()) != {"full"}:
        raise ConfigError("the comparison needs full-sort evaluation (eval_args.mode: full)")

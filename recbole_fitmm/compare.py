"""One-command side-by-side comparison of several models on one dataset over several seeds.

Every (model, seed) pair is one :func:`~recbole_fitmm.quick_start.run_recbole_fitmm` run under the
plugin's protocol (best epoch on valid Recall@20, test once with the best-valid weights and the
``test_mask``). Its best checkpoint is then scored user by user on the test split with the
trainer's own masking and RecBole's collector and metrics (:func:`per_user_metrics`); the mean must
reproduce the run's test Recall@20. Statistics and tables: :mod:`recbole_fitmm.compare_table`.

Configuration keys ``MODEL:key`` apply to one model only (e.g. ``DRAGON:learning_rate``). Every
finished run is stored in ``<out>/runs/`` with a signature of its model, dataset, seed, config
files and values; a later comparison with the same signature reuses it instead of training again,
so an interrupted comparison resumes and models can be added one at a time; a run that was
interrupted during training continues from its ``*.last.pth`` checkpoint when one with the same
resolved configuration and data is found in the checkpoint folder
(:func:`~recbole_fitmm.checkpoint.find_resumable`). Delete ``runs/`` after
changing model code. Files in ``out_dir``, written atomically: ``summary.md``, ``summary.csv``,
``per_seed.csv`` (rewritten after every run), ``per_user_recall@20.npz`` and ``chart.png``
(test Recall@20 and NDCG@20 per model with the seed spread).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_fitmm.checkpoint import find_resumable
from recbole_fitmm.compare_report import per_seed_rows, render_csv, render_markdown
from recbole_fitmm.compare_table import (
    DEFAULT_TEST,
    PAIRED_TESTS,
    SELECT_METRIC,
    PerUser,
    RunRecord,
    load_run,
    save_run,
    seed_averaged,
    summarise,
    summarise_by_activity,
)
from recbole_fitmm.config import plugin_yaml_texts
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write, atomic_write_text
from recbole_fitmm.per_user import evaluate_checkpoint
from recbole_fitmm.plots import comparison_chart
from recbole_fitmm.provenance import code_digest
from recbole_fitmm.quick_start import (
    build_config,
    run_recbole_fitmm,
)
from recbole_fitmm.stats import DEFAULT_ACTIVITY_BINS, check_bins
from recbole_fitmm.version import __version__

#: Largest difference, per test metric, between a run's own test result and the re-evaluation of
#: its best checkpoint that still counts as the same result. On a CPU the two are identical; on a
#: GPU sparse products accumulate in a nondeterministic order, so scores (and rarely a ranking)
#: move in the last bits.
REEVALUATION_TOLERANCE = 5e-4


def run_one(
    model: str,
    dataset: str,
    seed: int,
    config_file_list: list[str] | None,
    config_dict: dict[str, Any],
    keep_checkpoints: bool = False,
    resume_from: str | Path | None = None,
) -> RunRecord:
    """Train, select on valid and test one model with one seed, then score users one by one.

    A run whose loss diverged is tested with its best checkpoint and marked ``diverged``; if it
    diverged before any validation it has no test result.

    Args:
        model: Model name (plugin or RecBole).
        dataset: Dataset name.
        seed: Seed of the run.
        config_file_list: Extra yaml files.
        config_dict: Extra configuration values (``seed`` is set here).
        keep_checkpoints: Keep the run's checkpoint files (deleted otherwise).
        resume_from: Continue this interrupted run's ``*.last.pth`` checkpoint.

    Returns:
        The run's record.

    Raises:
        RuntimeError: The per-user re-evaluation differs from the run's test result by more than
            :data:`REEVALUATION_TOLERANCE`.
    """
    result = run_recbole_fitmm(
        model, dataset, config_file_list, {**config_dict, "seed": seed}, resume_from=resume_from
    )
    checkpoint = result["checkpoint"]
    test = result["test_result"] or {}
    per_user = PerUser(users=np.empty(0, dtype=str), values={})
    if checkpoint is not None and result["test_result"] is not None:
        again, per_user = evaluate_checkpoint(result["config"], checkpoint)
        mean = float(per_user.values[SELECT_METRIC].mean())
        gaps = [abs(again.get(k, np.inf) - v) for k, v in test.items()]
        # the per-user mean is not rounded (metric_decimal_place: 4): allow the rounding too
        unrounded = (
            abs(mean - test[SELECT_METRIC])
            - 0.5 * 10.0 ** -result["config"]["metric_decimal_place"]
        )
        if max(*gaps, unrounded) > REEVALUATION_TOLERANCE:
            raise RuntimeError(
                f"{model} seed {seed}: per-user test {SELECT_METRIC} {mean:.5f} / re-evaluation "
                f"{again} differ from the run's test result {test} by more than "
                f"{REEVALUATION_TOLERANCE}"
            )
        if max(gaps) > 0:
            logging.getLogger().warning(
                f"{model} seed {seed}: the re-evaluation differs from the run's test result by "
                f"{max(gaps):.2g} (within {REEVALUATION_TOLERANCE}); the run's values are kept"
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
        test=test,
        train_seconds=result["train_seconds"],
        per_user=per_user,
        history=result["history"],
        diverged=result["diverged"],
    )


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
    method: str = DEFAULT_TEST,
    keep_checkpoints: bool = False,
    activity_bins: Sequence[int] = DEFAULT_ACTIVITY_BINS,
) -> Comparison:
    """Run every model with every seed on ``dataset`` and write the comparison table.

    Args:
        models: Model names (plugin and RecBole built-ins), in table order.
        dataset: Dataset name.
        seeds: Seeds; every model runs with each.
        config_file_list: Extra yaml files (e.g. ``data_path`` and the dataset keys).
        config_dict: Extra configuration values for every run; ``MODEL:key`` entries apply to
            ``MODEL`` only.
        out_dir: Output folder (default ``results/compare_<dataset>``); checkpoints go to its
            ``checkpoints/`` unless ``checkpoint_dir`` is configured.
        method: Paired test: ``twolevel`` (users and seeds, the default), ``wilcoxon`` or
            ``ttest`` (:mod:`recbole_fitmm.stats`).
        keep_checkpoints: Keep every run's checkpoint.
        activity_bins: Inclusive upper edges of the user-activity groups (training
            interactions), default ``(5, 10, 20)``: <= 5, 6-10, 11-20, > 20.

    Returns:
        The runs, the table rows and the written files.
    """
    check_bins(activity_bins)
    if not models or not seeds:
        raise ConfigError("need at least one model and one seed")
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    out = Path(out_dir or f"results/compare_{dataset}")
    shared = dict(config_dict or {})
    shared.setdefault("checkpoint_dir", str(out / "checkpoints"))
    per_model = {model: model_config(shared, model, models) for model in models}
    for model in models:  # fail before any training on a bad name or protocol
        _check_protocol(build_config(model, dataset, config_file_list, per_model[model]))
    logger = logging.getLogger()
    records: list[RunRecord] = []
    for model in models:
        for seed in seeds:
            values = {**per_model[model], "seed": seed}
            config = build_config(model, dataset, config_file_list, values)
            fingerprint = dataset_fingerprint(config)
            signature = run_signature(config, config_file_list, per_model[model], fingerprint)
            record = load_run(out / "runs", model, seed, signature)
            if record is None:
                resume = find_resumable(config, fingerprint)
                record = run_one(
                    model,
                    dataset,
                    seed,
                    config_file_list,
                    per_model[model],
                    keep_checkpoints,
                    resume,
                )
                save_run(out / "runs", record, signature)
            else:
                logger.info(f"compare: {model} seed {seed}: reusing the stored run")
            records.append(record)
            logger.info(f"compare: {model} seed {seed}: test {record.test}")
            atomic_write_text(out / "per_seed.csv", render_csv(per_seed_rows(records)))
    header = {
        "dataset": dataset,
        "models": ", ".join(models),
        "seeds": ", ".join(map(str, seeds)),
        "selection": "best epoch and best model on valid Recall@20; test evaluated once",
    }
    return _write_outputs(out, records, header, method, activity_bins)


def assemble(
    models: list[str],
    dataset: str,
    run_dirs: list[str | Path],
    out_dir: str | Path,
    method: str = DEFAULT_TEST,
    activity_bins: Sequence[int] = DEFAULT_ACTIVITY_BINS,
) -> Comparison:
    """The comparison table from runs stored by earlier comparisons, any seeds per model.

    Uses every ``<model>-seed<seed>`` run in the ``runs/`` folder of each of ``run_dirs`` whose
    model is listed, whatever settings it was made with: the caller vouches that the runs share
    the dataset and protocol (e.g. models trained in separate processes or on other machines, or
    a model with its own validation-selected settings). Nothing is trained.

    A folder given as ``LABEL=DIR`` holds runs of one model made with other settings (say FITMM
    at the released defaults and FITMM-plus): they enter the table under ``LABEL``, which is
    listed in ``models`` in place of the model's name.

    Args:
        models: Model names (or labels), in table order.
        dataset: Dataset name (for the table's header).
        run_dirs: Output folders of earlier comparisons, each optionally ``LABEL=DIR``.
        out_dir: Where the table files go.
        method: Paired test: ``twolevel`` (users and seeds, the default), ``wilcoxon`` or
            ``ttest`` (:mod:`recbole_fitmm.stats`).
        activity_bins: Upper edges of the user-activity groups (as :func:`compare`).

    Returns:
        The runs, the table rows and the written files.

    Raises:
        ConfigError: A listed model has no stored run, two folders hold the same model and
            seed, or a labelled folder holds runs of several models.
    """
    if method not in PAIRED_TESTS:
        raise ConfigError(f"paired test must be one of {PAIRED_TESTS}, got {method!r}")
    found: dict[tuple[str, int], tuple[RunRecord, Path]] = {}
    for entry in map(str, run_dirs):
        label, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        folder = Path(path)
        metas = [
            (meta_file, json.loads(meta_file.read_text()))
            for meta_file in sorted((folder / "runs").glob("*-seed*.json"))
        ]
        if label and len({meta["model"] for _, meta in metas}) > 1:
            raise ConfigError(
                f"{entry}: a labelled folder must hold runs of one model, found "
                f"{sorted({meta['model'] for _, meta in metas})}"
            )
        for meta_file, meta in metas:
            name = label or meta["model"]
            key = (name, int(meta["seed"]))
            if name not in models:
                continue
            record = load_run(folder / "runs", meta["model"], key[1], meta["signature"])
            if record is None:
                raise ConfigError(f"{meta_file}: unreadable stored run (or its .npz is missing)")
            record.model = name
            if key in found:
                raise ConfigError(
                    f"{key[0]} seed {key[1]} is stored in both {found[key][1]} and {folder}"
                )
            found[key] = (record, folder)
    missing = [model for model in models if not any(key[0] == model for key in found)]
    if missing:
        raise ConfigError(f"no stored runs of {missing} under {[str(d) for d in run_dirs]}")
    records = [found[key][0] for key in sorted(found, key=lambda k: (models.index(k[0]), k[1]))]
    seeds = {model: [r.seed for r in records if r.model == model] for model in models}
    header = {
        "dataset": dataset,
        "models": ", ".join(models),
        "seeds": "; ".join(f"{m} {', '.join(map(str, s))}" for m, s in seeds.items()),
        "selection": "assembled from stored runs (each: best epoch on valid Recall@20)",
        "runs from": ", ".join(str(d) for d in run_dirs),
    }
    out = Path(out_dir)
    atomic_write_text(out / "per_seed.csv", render_csv(per_seed_rows(records)))
    return _write_outputs(out, records, header, method, activity_bins)


def _write_outputs(
    out: Path,
    records: list[RunRecord],
    header: dict[str, Any],
    method: str,
    activity_bins: Sequence[int] = DEFAULT_ACTIVITY_BINS,
) -> Comparison:
    """Summarise ``records`` and write summary.md/.csv and the per-user npz into ``out``."""
    rows = summarise(records, method)
    activity = summarise_by_activity(records, method, activity_bins)
    header = {
        **header,
        "std": "sample standard deviation over seeds",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    markdown = render_markdown(rows, header, activity)
    users, averaged = seed_averaged(records)
    files = [
        atomic_write_text(out / "summary.md", markdown),
        atomic_write_text(out / "summary.csv", render_csv(rows)),
        out / "per_seed.csv",
    ]
    comparison_chart(rows, out / "chart.png")  # test R@20 / N@20 with the seed spread
    files.append(out / "chart.png")
    if activity:  # users grouped by their number of training interactions
        files.append(atomic_write_text(out / "summary_by_activity.csv", render_csv(activity)))
    buffer = io.BytesIO()
    np.savez(buffer, users=users, **averaged)
    files.append(atomic_write(out / "per_user_recall@20.npz", lambda f: f.write(buffer.getvalue())))
    return Comparison(records=records, rows=rows, markdown=markdown, files=files)


def model_config(config_dict: dict[str, Any], model: str, models: list[str]) -> dict[str, Any]:
    """The configuration values of one model: shared keys, then its ``MODEL:key`` entries.

    Args:
        config_dict: Shared keys and ``MODEL:key`` entries.
        model: The model.
        models: Every model of the comparison (a ``MODEL:`` prefix must name one of them).

    Returns:
        Plain ``key -> value`` for ``model``.
    """
    values = {key: value for key, value in config_dict.items() if ":" not in key}
    for key, value in config_dict.items():
        if ":" in key:
            owner, _, name = key.partition(":")
            if owner not in models:
                raise ConfigError(f"{key}: {owner} is not one of the compared models {models}")
            if owner == model:
                values[name] = value
    return values


def run_signature(
    config: Any,
    config_file_list: list[str] | None,
    config_dict: dict[str, Any],
    fingerprint: dict[str, Any],
) -> str:
    """Hash of everything a run is made from.

    Model, dataset and seed; the text of the config files and of the plugin's yaml files that
    apply (``properties/overall.yaml``, the model's and the dataset's); the configuration values;
    the dataset fingerprint; the package version and :func:`~recbole_fitmm.provenance.code_digest`
    (the package's sources and the library versions; not the git revision, so commits that touch
    only docs, tests or benchmarks keep stored runs). A stored run is reused only when all of
    them match.

    Args:
        config: The run's resolved ``Config``.
        config_file_list: Yaml files (their content is hashed, not their path).
        config_dict: The model's configuration values.
        fingerprint: The fingerprint of the run's data files.

    Returns:
        A hex digest.
    """
    files = [Path(path).read_text() for path in config_file_list or []]
    blob = json.dumps(
        {
            "model": config["model"],
            "dataset": config["dataset"],
            "seed": config["seed"],
            "files": files,
            "properties": plugin_yaml_texts(config["model"], config["dataset"]),
            "config": config_dict,
            "data": fingerprint["sha256"],
            "version": __version__,
            "code": code_digest(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


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

"""The tuned comparison: every model tuned on validation with the same trial budget, then run over
the seeds at its selected parameters (``run_compare.py --tuned``).

For each model with a search space (``properties/hyper/<Model>.hyper``): a search of ``budget``
trials — the whole grid when it is no larger, a random sample of it otherwise — with the hyperopt
backend or Ray Tune, selected on the validation metric only, with a tuning seed that is not one of
the reported seeds. Models without a search space (Pop) run at their defaults. The search result
is stored in ``<out>/tuning/<Model>.json`` with a signature of everything it depends on and
reused when the signature matches; the seed runs are stored and reused as in any comparison.
The table gets the budget, the trials run and the selected parameters per model
(``summary_tuning.csv`` and a section of ``summary.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recbole_fitmm.compare import Comparison, compare, model_config
from recbole_fitmm.compare_report import render_csv
from recbole_fitmm.compare_table import DEFAULT_TEST
from recbole_fitmm.config import PROPERTIES, plugin_yaml_texts
from recbole_fitmm.data.files import dataset_fingerprint
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.provenance import code_digest
from recbole_fitmm.quick_start import build_config
from recbole_fitmm.stats import DEFAULT_ACTIVITY_BINS
from recbole_fitmm.tuning import TOOLS, Search, TuningResult, tune
from recbole_fitmm.tuning_ray import RayResources, tune_ray
from recbole_fitmm.tuning_space import parse_space
from recbole_fitmm.version import __version__

#: Seed of every tuning trial unless given: not one of the seeds a comparison reports by default.
TUNING_SEED = 42


def space_file(model: str) -> Path | None:
    """The model's search space in ``properties/hyper/``, or ``None`` when it has none."""
    path = PROPERTIES / "hyper" / f"{model}.hyper"
    return path if path.is_file() else None


def plan(model: str, budget: int) -> tuple[str, int, int]:
    """How a budget is spent on a model's search space.

    Args:
        model: Model name (its space must exist).
        budget: Trials per model.

    Returns:
        ``(algo, max_evals, grid_size)``: the whole grid when it has at most ``budget`` points,
        else ``budget`` random points of it.
    """
    space = parse_space(space_file(model))  # type: ignore[arg-type]
    grid = math.prod(len(param.grid()) for param in space)
    return ("exhaustive", grid, grid) if grid <= budget else ("random", budget, grid)


def _signature(model: str, dataset: str, files: list[str] | None, fixed: dict, extra: dict) -> str:
    """Hash of what a search result depends on (space, budget, settings, data, code)."""
    config = build_config(model, dataset, files, fixed)
    blob = json.dumps(
        {
            "model": model,
            "dataset": dataset,
            "space": space_file(model).read_text(),  # type: ignore[union-attr]
            "files": [Path(f).read_text() for f in files or []],
            "properties": plugin_yaml_texts(model, dataset),
            "fixed": fixed,
            "data": dataset_fingerprint(config)["sha256"],
            "version": __version__,
            "code": code_digest(),
            **extra,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def tune_model(
    out_dir: Path,
    model: str,
    dataset: str,
    budget: int,
    fixed: dict[str, Any],
    config_file_list: list[str] | None = None,
    tool: str = "hyperopt",
    resources: RayResources | None = None,
) -> TuningResult:
    """Tune one model with ``budget`` trials on validation (reusing a matching stored search).

    Args:
        out_dir: The comparison's folder; the result goes to ``tuning/<model>.json``.
        model: Model name (with a search space).
        dataset: Dataset name.
        budget: Trials.
        fixed: Fixed configuration values of every trial (the tuning seed included).
        config_file_list: Fixed yaml files.
        tool: ``hyperopt`` or ``ray``.
        resources: Ray's resources (``tool="ray"``).

    Returns:
        The search result.
    """
    algo, max_evals, grid = plan(model, budget)
    extra = {"budget": budget, "algo": algo, "max_evals": max_evals}
    signature = _signature(model, dataset, config_file_list, fixed, extra)
    path = out_dir / "tuning" / f"{model}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("signature") == signature and stored.get("complete", True):
            logging.getLogger().info(f"tuned comparison: {model}: reusing {path}")
            stored.pop("signature")
            return TuningResult(**stored)
    search = Search(space_file(model), algo, max_evals, max_evals, config_file_list, fixed)  # type: ignore[arg-type]
    if tool == "ray":
        tuning_dir = out_dir / "tuning"
        result = tune_ray(model, dataset, search, resources or RayResources(), tuning_dir)
    else:
        result = tune(model, dataset, search, out_dir=out_dir / "tuning")
    atomic_write_text(path, json.dumps({**asdict(result), "signature": signature}, indent=2))
    return result


def tuned_compare(
    models: list[str],
    dataset: str,
    seeds: list[int],
    budget: int,
    config_file_list: list[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    method: str = DEFAULT_TEST,
    tool: str = "hyperopt",
    resources: RayResources | None = None,
    tuning_seed: int = TUNING_SEED,
    trial_epochs: int | None = None,
    activity_bins: Sequence[int] = DEFAULT_ACTIVITY_BINS,
) -> Comparison:
    """Tune every model with the same budget on validation, then compare them over the seeds.

    Args:
        models: Model names, in table order.
        dataset: Dataset name.
        seeds: Seeds of the compared runs.
        budget: Trials per model.
        config_file_list: Extra yaml files.
        config_dict: Extra values for every run and trial (``MODEL:key`` for one model).
        out_dir: Output folder (default ``results/tuned_<dataset>``).
        method: Paired test of the table.
        tool: ``hyperopt`` (trials one after another) or ``ray`` (in parallel).
        resources: Ray's resources.
        tuning_seed: Seed of every trial; refused when it is one of ``seeds``.
        trial_epochs: Epoch cap of each trial (early stopping still applies); default: the
            configuration's ``epochs``.
        activity_bins: Upper edges of the user-activity groups of the table.

    Returns:
        The comparison at the selected parameters, with ``tuning`` rows.

    Raises:
        ConfigError: Bad budget, tool or tuning seed.
    """
    if budget < 1:
        raise ConfigError(f"--budget must be at least 1, got {budget}")
    if tool not in TOOLS:
        raise ConfigError(f"tool must be one of {TOOLS}, got {tool!r}")
    if tuning_seed in seeds:
        raise ConfigError(
            f"the tuning seed {tuning_seed} is one of the reported seeds {seeds}: settings "
            "chosen on a seed would be reported with it; choose another --tuning_seed"
        )
    out = Path(out_dir or f"results/tuned_{dataset}")
    shared = dict(config_dict or {})
    selected: dict[str, dict[str, Any]] = {}
    rows = []
    for model in models:
        if space_file(model) is None:
            rows.append(
                {
                    "model": model,
                    "budget": 0,
                    "trials": 0,
                    "failed": 0,
                    "algo": "—",
                    "valid_of_selected": None,
                    "selected": "defaults (no search space)",
                }
            )
            continue
        fixed = {**model_config(shared, model, models), "seed": tuning_seed}
        fixed.pop("checkpoint_dir", None)
        if trial_epochs is not None:
            fixed["epochs"] = trial_epochs
        result = tune_model(out, model, dataset, budget, fixed, config_file_list, tool, resources)
        if not result.best_params:
            raise ConfigError(f"no trial of {model} succeeded; see {out / 'tuning'}")
        selected[model] = result.best_params
        failed = sum(1 for trial in result.trials if trial.get("status") == "failed")
        rows.append(
            {
                "model": model,
                "budget": budget,
                "trials": len(result.trials),
                "failed": failed,
                "algo": plan(model, budget)[0],
                "valid_of_selected": result.best_valid_result.get("recall@20"),
                "selected": json.dumps(result.best_params, sort_keys=True),
            }
        )
    values = dict(shared)
    for model, params in selected.items():
        values.update({f"{model}:{key}": value for key, value in params.items()})
    comparison = compare(
        models, dataset, seeds, config_file_list, values, out, method, activity_bins=activity_bins
    )
    atomic_write_text(out / "summary_tuning.csv", render_csv(rows))
    lines = [
        "",
        f"**Tuning** (validation Recall@20 only; {budget} trials per model, the whole grid when "
        f"smaller; trials with seed {tuning_seed}, not one of the reported seeds)",
        "",
        "| model | budget | trials run | failed | search | selected parameters |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['budget']} | {row['trials']} | {row['failed']} | "
            f"{row['algo']} | {row['selected']} |"
        )
    markdown = comparison.markdown + "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", markdown)
    comparison.markdown = markdown
    comparison.files.append(out / "summary_tuning.csv")
    return comparison

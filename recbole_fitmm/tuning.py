"""Hyperparameter search with RecBole's ``HyperTuning`` (hyperopt 0.2.5), selected on validation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recbole.trainer import HyperTuning

from recbole_fitmm.cli import parse_value
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.quick_start import objective_function

ALGORITHMS = ("exhaustive", "random", "bayes")


@dataclass
class TuningResult:
    """Outcome of a search.

    Attributes:
        model: Model name.
        dataset: Dataset name.
        best_params: The configuration with the best validation score (never chosen on test).
        best_valid_result: Its validation metrics.
        test_result: Its test metrics (reported, not used for selection).
        trials: Every tried configuration with its validation score and results.
    """

    model: str
    dataset: str
    best_params: dict[str, Any]
    best_valid_result: dict[str, float]
    test_result: dict[str, float]
    trials: list[dict[str, Any]]


def tune(
    model: str,
    dataset: str,
    params_file: str | Path,
    algo: str = "exhaustive",
    max_evals: int = 100,
    early_stop: int = 10,
    config_file_list: list[str] | None = None,
    fixed: dict[str, Any] | None = None,
) -> TuningResult:
    """Search the space of ``params_file`` (RecBole's format: ``name choice [a,b]`` per line).

    Args:
        model: Plugin or RecBole model name.
        dataset: Dataset name.
        params_file: The search space.
        algo: ``exhaustive`` (grid), ``random`` or ``bayes`` (TPE).
        max_evals: Trials for random/bayes (the grid size for exhaustive).
        early_stop: Stop after this many trials without improvement.
        config_file_list: Fixed yaml files for every trial.
        fixed: Fixed configuration values for every trial; a tuned parameter always wins over
            them (unlike RecBole's command line, which silently pins tuned parameters).

    Returns:
        The validation-selected configuration and every trial.
    """
    if algo not in ALGORITHMS:
        raise ConfigError(f"algo is {algo!r}; expected one of {ALGORITHMS}")
    if not Path(params_file).is_file():
        raise ConfigError(f"params file {params_file} does not exist")
    base = {**(fixed or {}), "model": model, "dataset": dataset}

    def objective(params: dict[str, Any], files: list[str] | None) -> dict[str, Any]:
        return objective_function({**base, **params}, files)

    search = HyperTuning(
        objective,
        params_file=str(params_file),
        fixed_config_file_list=config_file_list,
        algo=algo,
        max_evals=max_evals,
        early_stop=early_stop,
    )
    search.run()
    trials = []
    for params, result in search.params2result.items():
        trials.append(
            {
                "params": params,
                "best_valid_score": float(result["best_valid_score"]),
                "best_valid_result": result["best_valid_result"],
                "test_result": result["test_result"],
            }
        )
    bigger = next(iter(search.params2result.values()))["valid_score_bigger"]
    best = max(trials, key=lambda t: t["best_valid_score"] if bigger else -t["best_valid_score"])
    best_params = dict(search.best_params or {})
    if HyperTuning.params2str(best_params) != best["params"]:
        best_params = _parse_params(best["params"])
    return TuningResult(
        model=model,
        dataset=dataset,
        best_params=best_params,
        best_valid_result=best["best_valid_result"],
        test_result=best["test_result"],
        trials=trials,
    )


def _parse_params(text: str) -> dict[str, Any]:
    pairs = (item.split(":", 1) for item in text.split(", "))
    return {key: parse_value(value) for key, value in pairs}


def write_result(result: TuningResult, path: str | Path) -> Path:
    """Write ``result`` as JSON, atomically."""
    return atomic_write_text(path, json.dumps(asdict(result), indent=2) + "\n")

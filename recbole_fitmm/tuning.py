"""Hyperparameter search, selected on validation: the search space, trial records, progress lines,
the result file, and the hyperopt backend (RecBole's ``HyperTuning``, hyperopt 0.2.5).

The Ray Tune backend (:mod:`recbole_fitmm.tuning_ray`) uses the same space, records, progress and
result; only the scheduling differs.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from recbole.trainer import HyperTuning

with warnings.catch_warnings():  # hyperopt 0.2.5 and ray 2.6.3 import the deprecated pkg_resources
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    from hyperopt import hp

from recbole_fitmm.cli import parse_value
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.quick_start import build_config, objective_function

ALGORITHMS = ("exhaustive", "random", "bayes")
KINDS = ("choice", "uniform", "loguniform", "quniform")

#: ``objective(config_dict, config_file_list)`` -> the dictionary of
#: :func:`recbole_fitmm.quick_start.objective_function`.
Objective = Callable[[dict[str, Any], list[str] | None], dict[str, Any]]


@dataclass(frozen=True)
class SearchParam:
    """One line of a params file.

    Attributes:
        name: Configuration key.
        kind: ``choice``, ``uniform``, ``loguniform`` (natural-log bounds) or ``quniform``.
        values: The options of a ``choice``; ``(low, high)`` or ``(low, high, q)`` otherwise.
    """

    name: str
    kind: str
    values: tuple[Any, ...]

    def grid(self) -> list[Any]:
        """The values an exhaustive search tries.

        Returns:
            The options of a ``choice``; ``low, low + q, ..., high`` of a ``quniform`` (rounded
            to multiples of ``q`` as hyperopt does, integers when bounds and ``q`` are).

        Raises:
            ConfigError: A continuous (``uniform``/``loguniform``) parameter.
        """
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "quniform":
            low, high, q = self.values
            steps = range(round(low / q), round(high / q) + 1)
            return [self.cast(k * q) for k in steps]
        raise ConfigError(
            f"{self.name} is {self.kind}: an exhaustive search needs choice or quniform entries"
        )

    def cast(self, value: Any) -> Any:
        """A sampled value as plain Python (numpy scalars unwrapped; integral quniform -> int)."""
        if isinstance(value, np.generic):
            value = value.item()
        if self.kind == "quniform" and all(float(v).is_integer() for v in self.values):
            return int(round(value))
        return value


def parse_space(params_file: str | Path) -> list[SearchParam]:
    """Read a params file in RecBole's format, one ``name kind values`` per line.

    ``lr choice [0.01,0.001]``, ``dropout uniform 0,0.5``, ``lr loguniform -8,0`` (natural-log
    bounds), ``n quniform 1,4,1``. Blank lines and ``#`` comments are skipped; values are typed
    without ``eval``.

    Args:
        params_file: The search space.

    Returns:
        The parameters in file order.

    Raises:
        ConfigError: Missing file, unknown kind, malformed values or a repeated name.
    """
    path = Path(params_file)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    space: list[SearchParam] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        if len(tokens) < 3 or tokens[1] not in KINDS:
            raise ConfigError(f"{where}: expected 'name {'|'.join(KINDS)} values', got {raw!r}")
        name, kind, text = tokens[0], tokens[1], "".join(tokens[2:])
        if any(param.name == name for param in space):
            raise ConfigError(f"{where}: {name} is given twice")
        space.append(SearchParam(name, kind, _values(kind, text, where)))
    if not space:
        raise ConfigError(f"params file {path} has no parameter")
    return space


def _values(kind: str, text: str, where: str) -> tuple[Any, ...]:
    if kind == "choice":
        options = _typed(parse_value(text))
        if not isinstance(options, list) or not options:
            raise ConfigError(f"{where}: choice needs a non-empty list like [0.01,0.001]")
        return tuple(options)
    try:
        numbers = tuple(float(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    size = 3 if kind == "quniform" else 2
    if len(numbers) != size or not all(map(math.isfinite, numbers)) or numbers[0] > numbers[1]:
        form = "low,high,q" if size == 3 else "low,high"
        raise ConfigError(f"{where}: {kind} needs {form} with low <= high, got {text!r}")
    if kind == "quniform" and numbers[2] <= 0:
        raise ConfigError(f"{where}: quniform needs q > 0, got {text!r}")
    return numbers


def _typed(value: Any) -> Any:
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return parse_value(value) if isinstance(value, str) else value


def space_size(space: list[SearchParam], algo: str, max_evals: int) -> int:
    """Number of trials a search runs (the grid size for ``exhaustive``, else ``max_evals``).

    Args:
        space: The parsed params file.
        algo: One of :data:`ALGORITHMS`.
        max_evals: Trials of a random or bayes search.

    Returns:
        The number of trials.

    Raises:
        ConfigError: Unknown algorithm, ``max_evals < 1``, or a continuous entry in a grid.
    """
    if algo not in ALGORITHMS:
        raise ConfigError(f"algo is {algo!r}; expected one of {ALGORITHMS}")
    if algo != "exhaustive":
        if max_evals < 1:
            raise ConfigError(f"max_evals is {max_evals}; expected >= 1")
        return max_evals
    return math.prod(len(param.grid()) for param in space)


def plain_params(space: list[SearchParam], params: dict[str, Any]) -> dict[str, Any]:
    """A sampled configuration as plain Python values, in the file's order.

    Args:
        space: The parsed params file.
        params: Values sampled by a search library.

    Returns:
        ``{name: value}``.
    """
    return {param.name: param.cast(params[param.name]) for param in space if param.name in params}


def trial_base(model: str, dataset: str, fixed: dict[str, Any] | None) -> dict[str, Any]:
    """The configuration every trial shares.

    Args:
        model: Model name.
        dataset: Dataset name.
        fixed: Fixed configuration values.

    Returns:
        ``fixed`` with ``model`` and ``dataset``.
    """
    return {**(fixed or {}), "model": model, "dataset": dataset}


@dataclass
class TuningResult:
    """Outcome of a search.

    Attributes:
        model: Model name.
        dataset: Dataset name.
        best_params: The configuration with the best validation score (never chosen on test);
            empty when no trial succeeded.
        best_valid_result: Its validation metrics.
        test_result: Its test metrics (reported, not used for selection).
        trials: Every finished trial (:func:`trial_record`), in the order they finished.
        tool: ``hyperopt`` or ``ray``.
        complete: False when the search was interrupted before its last trial.
        experiment_dir: Ray's experiment folder (``None`` for hyperopt).
    """

    model: str
    dataset: str
    best_params: dict[str, Any]
    best_valid_result: dict[str, float]
    test_result: dict[str, float]
    trials: list[dict[str, Any]]
    tool: str = "hyperopt"
    complete: bool = True
    experiment_dir: str | None = None


def trial_record(
    params: dict[str, Any],
    result: dict[str, Any] | None,
    seconds: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The record of a finished trial; ``failed`` when it raised or has no usable result.

    A run whose loss diverged before its first validation has no finite validation score and no
    test result: it is recorded as failed, never selected.

    Args:
        params: The tuned values of the trial.
        result: What the objective returned (``None`` when it raised).
        seconds: Wall time of the call, when known.
        error: Why it failed (one line: exception type and message), when it raised.

    Returns:
        ``params``, ``status`` (``ok``/``failed``), ``best_valid_score``, ``best_valid_result``,
        ``test_result``, ``error`` and ``seconds``.
    """
    score = float(result["best_valid_score"]) if result else math.nan
    ok = result is not None and result.get("test_result") is not None and math.isfinite(score)
    return {
        "params": params,
        "status": "ok" if ok else "failed",
        "best_valid_score": score if math.isfinite(score) else None,
        "best_valid_result": (result or {}).get("best_valid_result") or {},
        "test_result": (result or {}).get("test_result"),
        "error": None if ok else error or "no validation/test result (the loss diverged early?)",
        "seconds": seconds,
    }


def select_best(records: list[dict[str, Any]], bigger: bool) -> dict[str, Any] | None:
    """The successful trial with the best validation score (the first one on ties), or None."""
    ok = [record for record in records if record["status"] == "ok"]
    sign = 1.0 if bigger else -1.0
    return max(ok, key=lambda record: sign * record["best_valid_score"], default=None)


def build_result(
    model: str, dataset: str, records: list[dict[str, Any]], bigger: bool, **extra: Any
) -> TuningResult:
    """Select on validation and assemble the result.

    Args:
        model: Model name.
        dataset: Dataset name.
        records: Every finished trial.
        bigger: Whether a larger validation score is better.
        **extra: ``tool``, ``complete``, ``experiment_dir``.

    Returns:
        The result; its selection never looks at test metrics.
    """
    best = select_best(records, bigger) or {}
    return TuningResult(
        model=model,
        dataset=dataset,
        best_params=dict(best.get("params", {})),
        best_valid_result=dict(best.get("best_valid_result", {})),
        test_result=dict(best.get("test_result") or {}),
        trials=list(records),
        **extra,
    )


def write_result(result: TuningResult, path: str | Path) -> Path:
    """Write ``result`` as JSON, atomically."""
    return atomic_write_text(path, json.dumps(asdict(result), indent=2) + "\n")


class Progress:
    """One line per finished trial, plus the no-progress count behind early stopping.

    Args:
        total: Trials the search runs.
        metric: The validation metric's name (e.g. ``recall@20``).
        bigger: Whether a larger score is better.
        write: Where the lines go (default :func:`print`).
    """

    def __init__(
        self, total: int, metric: str, bigger: bool, write: Callable[[str], None] = print
    ) -> None:
        self.total = total
        self.metric = metric
        self.bigger = bigger
        self.write = write
        self.records: list[dict[str, Any]] = []
        self.since_best = 0
        self.trained = 0
        self.start = time.perf_counter()

    def add(self, record: dict[str, Any], stored: bool = False) -> None:
        """Count a finished trial and write its line.

        Args:
            record: The trial's record.
            stored: The result was reused from an earlier run (not counted in the time estimate).
        """
        best_before = select_best(self.records, self.bigger)
        self.records.append(record)
        best = select_best(self.records, self.bigger)
        self.since_best = 0 if best is not best_before else self.since_best + 1
        done = len(self.records)
        left = max(self.total - done, 0)
        elapsed = time.perf_counter() - self.start
        self.trained += not stored
        eta = f"~{elapsed / self.trained * left:.1f} s" if self.trained else "?"
        params = ", ".join(f"{key}={value}" for key, value in record["params"].items())
        if record["status"] == "ok":
            outcome = f"valid {self.metric} {record['best_valid_score']:.4f}"
        else:
            outcome = f"FAILED ({record['error']})"
        best_text = f"{best['best_valid_score']:.4f}" if best else "-"
        self.write(
            f"[trial {done}/{self.total}] {params}: {outcome} | best {best_text} | {left} left | "
            f"{elapsed:.1f} s elapsed, {eta} to go" + (" (stored)" if stored else "")
        )

    def stalled(self, early_stop: int) -> bool:
        """Whether the last ``early_stop`` finished trials did not improve the best score."""
        return self.since_best >= early_stop


@dataclass(frozen=True)
class Search:
    """What a search tries, for either backend.

    Attributes:
        params_file: The search space (:func:`parse_space`).
        algo: ``exhaustive`` (grid), ``random`` or ``bayes`` (TPE).
        max_evals: Trials for random/bayes (the grid size for exhaustive).
        early_stop: Stop after this many finished trials without improvement (hyperopt's
            ``no_progress_loss``, as RecBole does).
        config_file_list: Fixed yaml files for every trial.
        fixed: Fixed configuration values for every trial; a tuned parameter always wins over
            them (unlike RecBole's command line, which silently pins tuned parameters).
    """

    params_file: str | Path
    algo: str = "exhaustive"
    max_evals: int = 100
    early_stop: int = 10
    config_file_list: list[str] | None = None
    fixed: dict[str, Any] | None = None


def tune(
    model: str, dataset: str, search: Search, write: Callable[[str], None] = print
) -> TuningResult:
    """Run a search one trial after another (hyperopt backend).

    Args:
        model: Plugin or RecBole model name.
        dataset: Dataset name.
        search: The space and how to search it.
        write: Receives one progress line per finished trial.

    Returns:
        The validation-selected configuration and every trial.
    """
    params_file, algo, max_evals = search.params_file, search.algo, search.max_evals
    early_stop, config_file_list, fixed = search.early_stop, search.config_file_list, search.fixed
    space = parse_space(params_file)
    total = space_size(space, algo, max_evals)
    base = trial_base(model, dataset, fixed)
    config = build_config(model, dataset, config_file_list, base)
    progress = Progress(total, config["valid_metric"].lower(), config["valid_metric_bigger"], write)

    def objective(params: dict[str, Any], files: list[str] | None) -> dict[str, Any]:
        params = plain_params(space, params)
        start = time.perf_counter()
        result = objective_function({**base, **params}, files)
        progress.add(trial_record(params, result, time.perf_counter() - start))
        return result

    hyper = {p.name: _hyperopt_param(p, algo == "exhaustive") for p in space}
    tuner = HyperTuning(
        objective,
        space=hyper,
        fixed_config_file_list=config_file_list,
        algo=algo,
        max_evals=max_evals,
        early_stop=early_stop,
    )
    tuner.run()
    return build_result(model, dataset, progress.records, config["valid_metric_bigger"])


def _hyperopt_param(param: SearchParam, exhaustive: bool) -> Any:
    if param.kind == "choice" or exhaustive:
        return hp.choice(param.name, param.grid())
    return getattr(hp, param.kind)(param.name, *param.values)  # natural-log loguniform bounds

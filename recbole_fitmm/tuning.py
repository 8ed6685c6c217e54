"""Hyperparameter search, selected on validation: trial records, the trial store, progress lines,
the result file, and the hyperopt backend (RecBole's ``HyperTuning``, hyperopt 0.2.5). The search
space lives in :mod:`recbole_fitmm.tuning_space`.

The Ray Tune backend (:mod:`recbole_fitmm.tuning_ray`) uses the same space, records, progress and
result; only the scheduling differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from recbole.trainer import HyperTuning

with warnings.catch_warnings():  # hyperopt 0.2.5 and ray 2.6.3 import the deprecated pkg_resources
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    from hyperopt import STATUS_OK, fmin, hp

from recbole_fitmm.config import plugin_yaml_texts
from recbole_fitmm.io import atomic_write_text
from recbole_fitmm.quick_start import build_config, objective_function
from recbole_fitmm.tuning_space import (
    SearchParam,
    parse_space,
    plain_params,
    space_size,
    trial_points,
)

#: ``objective(config_dict, config_file_list)`` -> the dictionary of
#: :func:`recbole_fitmm.quick_start.objective_function`.
Objective = Callable[[dict[str, Any], list[str] | None], dict[str, Any]]


def trial_base(model: str, dataset: str, fixed: dict[str, Any] | None) -> dict[str, Any]:
    """The configuration every trial shares.

    Args:
        model: Model name.
        dataset: Dataset name.
        fixed: Fixed configuration values.

    Returns:
        ``fixed`` with ``model`` and ``dataset``; a ``data_path`` made absolute (trials may run
        in another folder, and both backends key stored trials by it).
    """
    base = {**(fixed or {}), "model": model, "dataset": dataset}
    if base.get("data_path"):
        base["data_path"] = os.path.abspath(base["data_path"])
    return base


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


def search_key(
    model: str, dataset: str, base: dict[str, Any], config_files: list[str] | None
) -> str:
    """Everything but a trial's parameters that determines its result (the store's key base).

    Args:
        model: Model name.
        dataset: Dataset name.
        base: Fixed configuration values of every trial (:func:`trial_base`).
        config_files: Fixed yaml files.

    Returns:
        The fixed values and the texts of the plugin's and the given yaml files, as JSON.
    """
    texts = plugin_yaml_texts(model, dataset) + [
        Path(name).read_text() for name in config_files or []
    ]
    return json.dumps([base, texts], sort_keys=True, default=str)


class TrialStore:
    """Finished trials of a search, one JSON record per trial, so a rerun skips them.

    A trial is keyed by its parameters and :func:`search_key`, so a changed grid reuses the
    points it shares with the old one and a changed fixed setting reuses nothing. Unreadable
    records are ignored (their trials run again).

    Args:
        folder: Where the records are written and read (``None``: nothing is stored).
        key_base: :func:`search_key` of the search.
        also_read: Further folders whose records are reused but never written (the other
            backend's store); a record in ``folder`` wins over one with the same key there.
    """

    def __init__(
        self, folder: str | Path | None, key_base: str, also_read: Sequence[Path] = ()
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.key_base = key_base
        self.records: dict[str, dict[str, Any]] = {}
        for source in [*also_read, *([self.folder] if self.folder else [])]:
            for path in sorted(source.glob("*.json")):
                try:
                    self.records[path.stem] = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue

    def key(self, params: dict[str, Any]) -> str:
        """The store key of a trial: a digest of the key base and its parameters."""
        text = self.key_base + json.dumps(params, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record of a trial with these parameters, or ``None``."""
        return self.records.get(self.key(params))

    def put(self, record: dict[str, Any]) -> None:
        """Store a finished trial's record (atomically; kept in memory without a folder)."""
        key = self.key(record["params"])
        self.records[key] = record
        if self.folder is not None:
            atomic_write_text(self.folder / f"{key}.json", json.dumps(record, default=str))


#: The search backends: RecBole's HyperTuning on hyperopt (one trial after another), Ray Tune.
TOOLS = ("hyperopt", "ray")


def store_folder(out_dir: str | Path, tool: str, model: str, dataset: str) -> Path:
    """The search folder of one backend (Ray's experiment folder for ``ray``); its trial
    records are in ``finished/``.

    Args:
        out_dir: Folder of the stores.
        tool: ``hyperopt`` or ``ray``.
        model: Model name.
        dataset: Dataset name.

    Returns:
        ``<out_dir>/<tool>/<model>_<dataset>``.
    """
    return Path(out_dir) / tool / f"{model}_{dataset}"


def trial_store(
    out_dir: str | Path | None, tool: str, model: str, dataset: str, key_base: str
) -> TrialStore:
    """The trial store of a search: written to ``tool``'s folder (:func:`store_folder`), read
    from every backend's, so a search switched from one backend to the other (same out_dir,
    space and fixed configuration) reuses the trials the first one finished.

    Args:
        out_dir: Folder of the stores (``None``: nothing is stored).
        tool: ``hyperopt`` or ``ray``, the backend that writes.
        model: Model name.
        dataset: Dataset name.
        key_base: :func:`search_key` of the search.
    """
    if out_dir is None:
        return TrialStore(None, key_base)
    others = [store_folder(out_dir, t, model, dataset) / "finished" for t in TOOLS if t != tool]
    return TrialStore(store_folder(out_dir, tool, model, dataset) / "finished", key_base, others)


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


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
    model: str,
    dataset: str,
    search: Search,
    write: Callable[[str], None] = print,
    out_dir: str | Path | None = None,
) -> TuningResult:
    """Run a search one trial after another (RecBole's ``HyperTuning`` on hyperopt).

    Grids and random searches over discrete spaces run the points of :func:`trial_points`
    (distinct, seeded with the configuration's ``seed``) through RecBole's exhaustive search;
    ``bayes`` and continuous random searches sample with hyperopt, seeded likewise. A trial that
    raises, or ends without a validation/test result, is recorded as failed and the search goes
    on. With ``out_dir``, every finished trial is stored in
    ``<out_dir>/hyperopt/<model>_<dataset>/finished/`` and the same search run again (after a
    kill or Ctrl-C, with this backend or the Ray one) reuses the stored trials instead of
    training them.

    Args:
        model: Plugin or RecBole model name.
        dataset: Dataset name.
        search: The space and how to search it.
        write: Receives one progress line per finished trial.
        out_dir: Folder of the trial store (``None``: nothing is stored).

    Returns:
        The validation-selected configuration and every finished trial; ``complete`` is False
        when the search was interrupted.
    """
    params_file, algo, max_evals = search.params_file, search.algo, search.max_evals
    early_stop, config_file_list, fixed = search.early_stop, search.config_file_list, search.fixed
    space = parse_space(params_file)
    total = space_size(space, algo, max_evals)
    base = trial_base(model, dataset, fixed)
    config = build_config(model, dataset, config_file_list, base)
    bigger = bool(config["valid_metric_bigger"])
    seed = int(config["seed"])
    points = trial_points(space, algo, max_evals, seed)
    store = trial_store(
        out_dir, "hyperopt", model, dataset, search_key(model, dataset, base, config_file_list)
    )
    progress = Progress(total, config["valid_metric"].lower(), bigger, write)
    worst = -math.inf if bigger else math.inf

    def trial(sampled: dict[str, Any]) -> dict[str, Any]:
        params = points[sampled["point"]] if points is not None else plain_params(space, sampled)
        record = store.get(params)
        stored = record is not None
        if record is None:
            start = time.perf_counter()
            result, error = None, None
            try:
                result = objective_function({**base, **params}, config_file_list)
            except Exception as err:  # a failing trial is recorded; the search goes on
                error = one_line(f"{type(err).__name__}: {err}")
            record = trial_record(params, result, time.perf_counter() - start, error)
            store.put(record)
        progress.add(record, stored=stored)
        score = record["best_valid_score"] if record["status"] == "ok" else worst
        return {"loss": -score if bigger else score, "status": STATUS_OK}

    if points is not None:
        hyper = {"point": hp.choice("point", list(range(len(points))))}
    else:
        hyper = {p.name: _hyperopt_param(p) for p in space}
    # RecBole's HyperTuning maps the algorithm (its exhaustive search) and the early stop;
    # fmin is called as its run() does, seeded and without hyperopt's progress bar.
    tuner = HyperTuning(
        objective_function,
        space=hyper,
        algo="exhaustive" if points is not None else algo,
        max_evals=total,
        early_stop=early_stop,
    )
    complete = True
    try:
        fmin(
            trial,
            tuner.space,
            algo=tuner.algo,
            max_evals=total,
            early_stop_fn=tuner.early_stop_fn,
            rstate=np.random.RandomState(seed),
            show_progressbar=False,
        )
    except KeyboardInterrupt:
        complete = False
    return build_result(model, dataset, progress.records, bigger, complete=complete)


def _hyperopt_param(param: SearchParam) -> Any:
    if param.kind == "choice":
        return hp.choice(param.name, list(param.values))
    return getattr(hp, param.kind)(param.name, *param.values)  # natural-log loguniform bounds

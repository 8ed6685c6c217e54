"""Ray Tune backend of the search: parallel trials, resumable, failures recorded.

Same params file, algorithms, selection (validation only) and result file as the hyperopt backend
(:mod:`recbole_fitmm.tuning`); trials run in parallel in a local Ray started here (or on a cluster
joined with ``address``).

Resuming: every finished trial is stored (:class:`~recbole_fitmm.tuning.TrialStore`), keyed by its
parameters and the fixed configuration, in ``<experiment_dir>/finished/`` by the driver as soon as
Ray reports it. Running the same search
again (after a kill, Ctrl-C or a crash) starts a new Ray experiment in the same folder whose
trials first look the key up: a stored trial reports its stored result (or failure) at once, and
only the others train. A changed grid reuses the points it shares with the old one, and trials the
hyperopt backend stored under the same ``out_dir`` are reused too (a search can switch backends).

Failures: an exception in the objective, or a run without a validation/test result (the loss
diverged before the first validation), fails its trial; the failure is stored and listed in the
result with its error, and the search goes on. A trial whose worker died (killed, out of memory)
is listed as failed but not stored, so a later run retries it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

with warnings.catch_warnings():  # ray 2.6.3 imports pkg_resources, deprecated by setuptools
    warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
    import ray
    from ray import air, tune
    from ray.air import session
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

from recbole_fitmm import compat
from recbole_fitmm.errors import ConfigError
from recbole_fitmm.quick_start import build_config, objective_function
from recbole_fitmm.tuning import (
    Objective,
    Progress,
    Search,
    TrialStore,
    TuningResult,
    build_result,
    one_line,
    search_key,
    store_folder,
    trial_base,
    trial_record,
    trial_store,
)
from recbole_fitmm.tuning_space import (
    SearchParam,
    parse_space,
    plain_params,
    space_size,
    trial_points,
)

METRIC = "best_valid_score"

#: Ray's log lines that the progress lines and the result file already cover.
RAY_NOISE = (
    "Trial task failed for trial",
    "Trials did not complete",
    "Failed to read the results for",
    "The TensorboardX logger cannot be instantiated",
    "Experiment has been interrupted",
    "Unhandled error",  # a trial that failed while an interrupted search was stopping
)


@dataclass(frozen=True)
class RayResources:
    """Where and how wide trials run.

    Attributes:
        cpus: CPUs of the local Ray started for the search (default: the machine's cores).
        cpus_per_trial: CPUs reserved per trial; torch uses ``int(cpus_per_trial)`` threads.
        gpus_per_trial: GPUs per trial (fractions share a GPU); 0 trains on the CPU; ``None``
            (the default): the cluster's GPUs shared by the trials its CPUs run at once (at
            most one GPU each), or 0 without GPUs.
        address: ``host:port`` of a running Ray cluster to join instead of starting one.
    """

    cpus: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None
    address: str | None = None

    @property
    def threads(self) -> int:
        """Torch/OpenMP threads of a trial."""
        return max(1, int(self.cpus_per_trial))


class TrialFailed(RuntimeError):
    """A trial's objective raised or returned no usable result (message: one line)."""


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a search shares (sent to the Ray workers).

    Attributes:
        objective: ``objective(config_dict, config_file_list)``.
        base: Fixed configuration values, model and dataset (absolute paths).
        config_files: Fixed yaml files (absolute paths).
        space: The parsed params file.
        points: The trials' configurations (:func:`~recbole_fitmm.tuning.trial_points`; Ray's
            ``point`` indexes them), or ``None`` when Ray samples the space.
        store: Finished trials (read by the workers, written by the driver).
        resources: Threads and GPUs per trial.
    """

    objective: Objective
    base: dict[str, Any]
    config_files: list[str] | None
    space: list[SearchParam]
    points: list[dict[str, Any]] | None
    store: TrialStore
    resources: RayResources

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The tuned values of a trial from Ray's configuration."""
        if self.points is not None:
            return dict(self.points[config["point"]])
        return plain_params(self.space, config)


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """The Ray trainable: one objective call, reported once, then ``None`` (never a dict).

    Runs in a Ray worker whose working directory is the trial's folder: RecBole's ``log/`` and
    ``log_tensorboard/`` land there, checkpoints in ``saved/`` there (deleted after the test
    evaluation).

    Args:
        config: The trial's sampled parameters.
        job: The search's shared settings.

    Raises:
        TrialFailed: The objective raised, or gave no validation/test result.
    """
    compat.apply()
    params = job.params(config)
    stored = job.store.get(params)
    if stored is not None:
        if stored["status"] != "ok":
            raise TrialFailed(stored["error"])
        session.report({METRIC: stored["best_valid_score"], "record": stored})
        return None
    threads = str(job.resources.threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    torch.set_num_threads(job.resources.threads)
    root = logging.getLogger()  # RecBole's init_logger adds handlers only to a bare root logger
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    saved = Path(session.get_trial_dir()).resolve() / "saved"
    gpu_id = ",".join(str(i) for i in ray.get_gpu_ids()) if job.resources.gpus_per_trial else ""
    run = {**job.base, **params, "show_progress": False, "checkpoint_dir": str(saved)}
    run["gpu_id"] = gpu_id
    start = time.perf_counter()
    try:
        result = job.objective(run, job.config_files)
    except Exception as err:
        raise TrialFailed(one_line(f"{type(err).__name__}: {err}")) from err
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    record = trial_record(params, result, time.perf_counter() - start)
    if record["status"] != "ok":
        raise TrialFailed(record["error"])
    session.report({METRIC: record["best_valid_score"], "record": record})
    return None


class _Recorder(tune.Callback):
    """Driver side: turns finished trials into records, stores them, writes progress lines."""

    def __init__(self, job: TrialJob, progress: Progress) -> None:
        self.job = job
        self.progress = progress
        self.failed: list[Any] = []

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if "record" in trial.last_result:  # else stopped before it reported (early stop, Ctrl-C)
            self._keep(trial.last_result["record"])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed.append(trial)  # Ray writes the trial's error file after this call

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    def flush(self) -> None:
        """Record the failed trials whose error Ray has written."""
        for trial in [t for t in self.failed if t.error_file and os.path.exists(t.error_file)]:
            self.failed.remove(trial)
            text = Path(trial.error_file).read_text()
            own = re.findall(rf"{TrialFailed.__name__}: (.*)", text)
            lines = [line for line in text.splitlines() if line.strip()]
            error = own[-1].strip() if own else one_line(lines[-1] if lines else text)
            record = trial_record(self.job.params(trial.config), None, None, error)
            self._keep(record, store=bool(own))

    def _keep(self, record: dict[str, Any], store: bool = True) -> None:
        stored = self.job.store.get(record["params"]) is not None
        if store and not stored:
            self.job.store.put(record)
        self.progress.add(record, stored=stored)


class EarlyStop(tune.Stopper):
    """Ends a Ray search after ``early_stop`` finished trials without improvement.

    Args:
        progress: The search's progress (its no-progress count).
        early_stop: Finished trials without improvement that end the search.
    """

    def __init__(self, progress: Progress, early_stop: int) -> None:
        self.progress = progress
        self.early_stop = early_stop

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        """Whether to stop every trial now (Ray asks after each step)."""
        return self.progress.stalled(self.early_stop)


def tune_ray(
    model: str,
    dataset: str,
    search: Search,
    resources: RayResources = RayResources(),
    out_dir: str | Path = "results",
    objective: Objective = objective_function,
    write: Callable[[str], None] = print,
) -> TuningResult:
    """Search the space of ``params_file`` with parallel Ray Tune trials (resumable).

    Args:
        model: Plugin or RecBole model name.
        dataset: Dataset name.
        search: The space and how to search it (``early_stop``: end the search after this many
            finished trials without improvement; ``gpu_id``, ``checkpoint_dir`` and
            ``show_progress`` of ``fixed`` are set per trial).
        resources: CPUs/GPUs per trial, the local Ray's size or a cluster address. A Ray already
            initialised in this process is used as it is.
        out_dir: Ray's experiment folder is ``<out_dir>/ray/<model>_<dataset>``.
        objective: The trial's objective (default: the plugin's ``objective_function``).
        write: Receives one progress line per finished trial.

    Returns:
        The validation-selected configuration and every finished trial; ``complete`` is False
        when the search was interrupted (run it again to continue).

    Raises:
        ConfigError: Bad params file, algorithm, resources or fixed configuration.
    """
    params_file, algo, max_evals = search.params_file, search.algo, search.max_evals
    early_stop, config_file_list, fixed = search.early_stop, search.config_file_list, search.fixed
    space = parse_space(params_file)
    total = space_size(space, algo, max_evals)
    base = trial_base(model, dataset, fixed)
    files = [os.path.abspath(name) for name in config_file_list] if config_file_list else None
    for name in files or []:
        if not os.path.isfile(name):
            raise ConfigError(f"config file {name} does not exist")
    root = Path(out_dir).resolve()
    experiment = store_folder(root, "ray", model, dataset)
    store = trial_store(root, "ray", model, dataset, search_key(model, dataset, base, files))
    with ray_session(resources):
        resources = _resolve(resources)
        slots = _slots(resources)
        # after ray.init: RecBole's Config sets CUDA_VISIBLE_DEVICES, which would hide GPUs from Ray
        config = build_config(model, dataset, files, base)
        bigger = bool(config["valid_metric_bigger"])
        points = trial_points(space, algo, max_evals, int(config["seed"]))
        progress = Progress(total, config["valid_metric"].lower(), bigger, write)
        job = TrialJob(objective, base, files, space, points, store, resources)
        recorder = _Recorder(job, progress)
        if points is not None:
            param_space = {"point": tune.grid_search(list(range(len(points))))}
        else:
            param_space = {param.name: _domain(param) for param in space}
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, job=job),
            {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max" if bigger else "min",
                search_alg=_searcher(algo, bigger, int(config["seed"]), slots),
                num_samples=1 if points is not None else max_evals,
                reuse_actors=True,
            ),
            run_config=air.RunConfig(
                name=experiment.name,
                storage_path=str(experiment.parent),
                callbacks=[recorder],
                stop=EarlyStop(progress, early_stop),
                failure_config=air.FailureConfig(max_failures=0, fail_fast=False),
                verbose=0,
            ),
        )
        with quiet_ray():
            tuner.fit()
        recorder.flush()
    records = progress.records
    complete = len(records) >= total or progress.stalled(early_stop)
    return build_result(
        model,
        dataset,
        records,
        bigger,
        tool="ray",
        complete=complete,
        experiment_dir=str(experiment),
    )


def _domain(param: SearchParam) -> Any:
    if param.kind == "choice":
        return tune.choice(list(param.values))
    if param.kind == "uniform":
        return tune.uniform(*param.values)
    if param.kind == "loguniform":  # RecBole's bounds are natural logarithms
        return tune.loguniform(math.exp(param.values[0]), math.exp(param.values[1]))
    return tune.quniform(*param.values)


def _searcher(algo: str, bigger: bool, seed: int, slots: int) -> Any:
    if algo == "bayes":
        mode = "max" if bigger else "min"
        search = HyperOptSearch(metric=METRIC, mode=mode, random_state_seed=seed)
        return ConcurrencyLimiter(search, max_concurrent=slots)
    return BasicVariantGenerator(random_state=seed, max_concurrent=slots)


def _resolve(resources: RayResources) -> RayResources:
    """``resources`` with ``gpus_per_trial`` decided (``None``: share the cluster's GPUs)."""
    if resources.gpus_per_trial is not None:
        return resources
    available = ray.cluster_resources()
    gpus = available.get("GPU", 0.0)
    if not gpus or resources.cpus_per_trial <= 0:
        return replace(resources, gpus_per_trial=0.0)
    concurrent = max(1, int(available.get("CPU", 0.0) // resources.cpus_per_trial))
    share = min(1.0, gpus / concurrent)
    logging.getLogger().warning(
        f"tuning: {gpus:g} GPU(s) shared by up to {concurrent} trials at a time "
        f"(gpus_per_trial={share:.3g}; set --gpus_per_trial to change, 0 for the CPU)"
    )
    return replace(resources, gpus_per_trial=share)


def _slots(resources: RayResources) -> int:
    available = ray.cluster_resources()
    gpus_per_trial = resources.gpus_per_trial or 0.0
    if resources.cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
    cpus = available.get("CPU", 0.0)
    if resources.cpus_per_trial > cpus:
        raise ConfigError(f"cpus_per_trial is {resources.cpus_per_trial}; Ray has {cpus:g} CPUs")
    slots = int(cpus // resources.cpus_per_trial)
    if gpus_per_trial:
        gpus = available.get("GPU", 0.0)
        if gpus_per_trial > gpus:
            raise ConfigError(f"gpus_per_trial is {gpus_per_trial}; Ray has {gpus:g} GPUs")
        slots = min(slots, int(gpus // gpus_per_trial))
    return max(slots, 1)


@contextmanager
def ray_session(resources: RayResources) -> Iterator[None]:
    """Use the Ray of this process, or start one (or join ``address``) and shut it down after.

    Args:
        resources: Cluster address, or the CPUs of the local Ray.
    """
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if resources.address:
        ray.init(address=resources.address, **options)
    else:
        cpus = resources.cpus or os.cpu_count() or 1
        ray.init(num_cpus=cpus, include_dashboard=False, **options)
    try:
        yield
    finally:
        ray.shutdown()


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(RAY_NOISE)


@contextmanager
def quiet_ray() -> Iterator[None]:
    """No Ray console table or box, and none of the log lines :data:`RAY_NOISE` lists.

    ``RAY_AIR_NEW_OUTPUT=0`` selects Ray's classic reporter, silent at ``verbose=0`` (the new
    one prints its configuration box at every verbosity); the previous value is restored.
    """
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    logging.getLogger("ray").setLevel(logging.WARNING)
    handlers = logging.getLogger("ray").handlers
    noise = _DropNoise()
    for handler in handlers:
        handler.addFilter(noise)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(noise)
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous

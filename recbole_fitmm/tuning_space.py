"""The search space of a tuning run: RecBole's params-file format, grid sizes, and the trials a
grid or a random search over a discrete space runs (distinct points, seeded).

Used by both tuning backends (:mod:`recbole_fitmm.tuning`, :mod:`recbole_fitmm.tuning_ray`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recbole_fitmm.cli import parse_value
from recbole_fitmm.errors import ConfigError

ALGORITHMS = ("exhaustive", "random", "bayes")
KINDS = ("choice", "uniform", "loguniform", "quniform")


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


def grid_size(space: list[SearchParam]) -> int | None:
    """Number of grid points, or ``None`` when a parameter is continuous."""
    if any(param.kind in ("uniform", "loguniform") for param in space):
        return None
    return math.prod(len(param.grid()) for param in space)


def space_size(space: list[SearchParam], algo: str, max_evals: int) -> int:
    """Number of trials a search runs.

    The grid size for ``exhaustive``; ``min(max_evals, grid size)`` for ``random`` over a space of
    ``choice``/``quniform`` entries (distinct points, :func:`trial_points`); else ``max_evals``.

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
    if algo == "exhaustive":
        return math.prod(len(param.grid()) for param in space)
    if max_evals < 1:
        raise ConfigError(f"max_evals is {max_evals}; expected >= 1")
    size = grid_size(space)
    return min(max_evals, size) if algo == "random" and size is not None else max_evals


def trial_points(
    space: list[SearchParam], algo: str, max_evals: int, seed: int
) -> list[dict[str, Any]] | None:
    """The configurations of a grid, or of a random search over a discrete space.

    A random search over ``choice``/``quniform`` entries draws its points **without
    replacement** (numpy's generator seeded with ``seed``), so a budget of ``N`` trials is ``N``
    distinct configurations for every model (sampling with replacement, as hyperopt and Ray do,
    spends about a third of 12 trials on repeats of a 14-point grid).

    Args:
        space: The parsed params file.
        algo: One of :data:`ALGORITHMS`.
        max_evals: Trials of a random search.
        seed: Seed of the draw.

    Returns:
        ``{name: value}`` per trial (every grid point for ``exhaustive``, file order, the last
        parameter varying fastest; the drawn points in draw order for ``random``), or ``None``
        when the library samples (continuous entries, ``bayes``).
    """
    size = space_size(space, algo, max_evals)
    if algo == "bayes" or grid_size(space) is None:
        return None
    grids = [param.grid() for param in space]
    total = math.prod(len(grid) for grid in grids)
    if algo == "exhaustive":
        indices = list(range(total))
    else:
        drawn = np.random.default_rng(seed).choice(total, size=size, replace=False)
        indices = [int(index) for index in drawn]
    points = []
    for index in indices:
        point = {}
        for param, grid in reversed(list(zip(space, grids))):
            index, position = divmod(index, len(grid))
            point[param.name] = grid[position]
        points.append({param.name: point[param.name] for param in space})
    return points


def plain_params(space: list[SearchParam], params: dict[str, Any]) -> dict[str, Any]:
    """A sampled configuration as plain Python values, in the file's order.

    Args:
        space: The parsed params file.
        params: Values sampled by a search library.

    Returns:
        ``{name: value}``.
    """
    return {param.name: param.cast(params[param.name]) for param in space if param.name in params}

"""Command-line helpers shared by the scripts (``run_recbole_fitmm.py``, ``run_hyper.py``, ...)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from recbole_fitmm.errors import ConfigError, FITMMError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Type a command-line value: YAML scalars and lists, with ``1e-4`` read as a float.

    Args:
        text: The text after ``=``, e.g. ``0.001``, ``1e-4``, ``[10,20]``, ``True``, ``''``.

    Returns:
        The typed value (no ``eval``).
    """
    if _NUMBER.match(text.strip()):
        number = float(text)
        return int(number) if re.fullmatch(r"[-+]?\d+", text.strip()) else number
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, list):
        return [parse_value(v) if isinstance(v, str) else v for v in value]
    return value


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Turn ``--key=value`` tokens into a configuration dictionary.

    Raises:
        ConfigError: A token is not of the form ``--key=value``.
    """
    overrides: dict[str, Any] = {}
    for token in tokens:
        if not token.startswith("--") or "=" not in token:
            raise ConfigError(f"unrecognised argument {token!r}; expected --key=value")
        key, _, value = token[2:].partition("=")
        if not key:
            raise ConfigError(f"unrecognised argument {token!r}; expected --key=value")
        overrides[key] = parse_value(value)
    return overrides


def run_action(action: Callable[[], str]) -> int:
    """Run a command's action: print its message and return 0, or print ``error: ...`` on one
    line and return 2 (as argparse does for a bad command line) when it raises one of the
    plugin's errors.

    Args:
        action: Does the work; returns what to print.

    Returns:
        The exit status.
    """
    try:
        message = action()
    except FITMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(message)
    return 0


def format_results(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table with one column per row label (e.g. valid, test) and one row per metric."""
    labels = list(rows)
    metrics: list[str] = []
    for values in rows.values():
        metrics += [m for m in values if m not in metrics]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for metric in metrics:
        cells = [f"{rows[label][metric]:.4f}" if metric in rows[label] else "" for label in labels]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

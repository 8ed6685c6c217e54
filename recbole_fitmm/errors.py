"""The project's own error types: every bad input ends in one of these, with the file named."""

from __future__ import annotations


class FITMMError(Exception):
    """Base class of every error raised by ``recbole_fitmm`` on bad input or configuration."""


class DataError(FITMMError, ValueError):
    """A dataset, split or feature file is missing or malformed."""


class ConfigError(FITMMError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class CheckpointError(FITMMError, RuntimeError):
    """A checkpoint cannot be loaded (corrupt, or made for another dataset)."""

"""Typed, frozen hyperparameter records, read once from a RecBole ``Config`` in ``__init__``.

Every plugin model declares a frozen dataclass whose fields are exactly the keys of its
``properties/model/<Model>.yaml`` (a test checks this) and reads it with
``Params.from_config(config)``; no ``config[...]`` lookups anywhere else. A missing key or a
value of the wrong type fails at construction with a message naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from recbole_fitmm.errors import ConfigError

P = TypeVar("P", bound="ModelParams")


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Base of the per-model hyperparameter dataclasses (fields are declared by subclasses).

    Range checks are declared: the fields named in ``POSITIVE`` must be > 0, in ``NON_NEGATIVE``
    >= 0, in ``FRACTIONS`` in [0, 1], and ``CHOICES`` maps a field to its allowed values;
    :meth:`check_more` adds what does not fit these forms.
    """

    POSITIVE: ClassVar[tuple[str, ...]] = ()
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ()
    FRACTIONS: ClassVar[tuple[str, ...]] = ()
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_config(cls: type[P], config: Any, model: str = "") -> P:
        """Read every field of ``cls`` from ``config``.

        Args:
            config: A RecBole ``Config`` (or any mapping with ``in`` and ``[]``).
            model: Model name, for messages.

        Returns:
            The filled, validated dataclass.

        Raises:
            ConfigError: A key is missing, has the wrong type, or fails the subclass's checks.
        """
        where = model or cls.__name__.removesuffix("Params")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in config:
                raise ConfigError(
                    f"{where}: missing hyperparameter `{field.name}` (expected in "
                    f"properties/model/{where}.yaml or the run's configuration)"
                )
            values[field.name] = _coerce(where, field.name, config[field.name], str(field.type))
        return cls(**values)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def model_name(cls) -> str:
        """The model's name (the class name without ``Params``), for messages."""
        return cls.__name__.removesuffix("Params")

    def validate(self) -> None:
        """The declared range checks, then :meth:`check_more`.

        Raises:
            ConfigError: A value is out of range, naming the key.
        """
        model = self.model_name()
        for name in self.POSITIVE:
            check(getattr(self, name) > 0, model, f"{name} must be positive")
        for name in self.NON_NEGATIVE:
            check(getattr(self, name) >= 0, model, f"{name} must be >= 0")
        for name in self.FRACTIONS:
            check(0.0 <= getattr(self, name) <= 1.0, model, f"{name} must be in [0, 1]")
        for name, allowed in self.CHOICES.items():
            value = getattr(self, name)
            check(value in allowed, model, f"{name} must be one of {allowed}, got {value!r}")
        self.check_more()

    def check_more(self) -> None:
        """Checks beyond the declared ranges; subclasses raise :class:`ConfigError`."""


def _coerce(model: str, name: str, value: Any, type_name: str) -> Any:
    """Check ``value`` against a (string) annotation and convert int-valued floats etc."""
    options = [part.strip() for part in type_name.split("|")]
    if value is None:
        if "None" in options:
            return None
        raise ConfigError(f"{model}: `{name}` is not set")
    base = options[0]
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{model}: `{name}` must be true or false, got {value!r}")
        return value
    if base in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{model}: `{name}` must be a number, got {value!r}")
        if base == "int":
            if float(value) != int(value):
                raise ConfigError(f"{model}: `{name}` must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{model}: `{name}` must be a string, got {value!r}")
        return value
    return value


def check(condition: bool, model: str, message: str) -> None:
    """Raise :class:`ConfigError` with ``"<model>: <message>"`` unless ``condition`` holds.

    Args:
        condition: The check.
        model: Model name.
        message: What is wrong.
    """
    if not condition:
        raise ConfigError(f"{model}: {message}")

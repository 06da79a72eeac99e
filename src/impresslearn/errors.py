"""User-facing errors.

Everything a user can get wrong (a missing data set, a corrupt file, an unknown preset or override
key, an impossible density) raises a subclass of :class:`ImpressLearnError` whose message names what
was wrong and how to fix it. The CLI prints that message on one line instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


class ImpressLearnError(Exception):
    """Base class of all errors caused by user input rather than by a bug."""


class ConfigError(ImpressLearnError, ValueError):
    """An invalid configuration: unknown key, wrong type, impossible value."""


class DataError(ImpressLearnError):
    """A data set that is missing, corrupt or malformed."""


class CheckpointError(ImpressLearnError):
    """A run folder or checkpoint that is missing, corrupt or does not match."""


def refuse_unused(section: str, config: Any, defaults: Any, unused: dict[str, str]) -> None:
    """Refuse a setting that has no effect where it is given: each ``unused`` field (name: why
    it is not read) of ``config`` that differs from ``defaults`` (a nested section is named by
    its first differing field)."""
    for name, why in unused.items():
        value, default = getattr(config, name), getattr(defaults, name)
        if value == default:
            continue
        key = f"{section}.{name}"
        if dataclasses.is_dataclass(value):
            field = next(
                f.name
                for f in dataclasses.fields(value)
                if getattr(value, f.name) != getattr(default, f.name)
            )
            key, value = f"{key}.{field}", getattr(value, field)
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        raise ConfigError(f"{key}={shown} has no effect here: {why}; remove the setting")

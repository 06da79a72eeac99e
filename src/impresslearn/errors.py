"""User-facing errors.

Everything a user can get wrong (a missing data set, a corrupt file, an unknown preset or override
key, an impossible density) raises a subclass of :class:`ImpressLearnError` whose message names what
was wrong and how to fix it. The CLI prints that message on one line instead of a traceback.
"""


class ImpressLearnError(Exception):
    """Base class of all errors caused by user input rather than by a bug."""


class ConfigError(ImpressLearnError, ValueError):
    """An invalid configuration: unknown key, wrong type, impossible value."""


class DataError(ImpressLearnError):
    """A data set that is missing, corrupt or malformed."""


class CheckpointError(ImpressLearnError):
    """A run folder or checkpoint that is missing, corrupt or does not match."""

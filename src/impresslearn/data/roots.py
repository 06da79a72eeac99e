"""Find the data root: the folder under which data sets are looked up.

Precedence: the ``--data-root`` flag, then the ``IMPRESSLEARN_DATA`` environment variable, then a
per-user cache folder (``$XDG_CACHE_HOME/impresslearn`` or ``~/.cache/impresslearn``). The
environment is passed in as a mapping (the CLI passes ``os.environ``), so nothing here reads global
state and tests can pass any environment they like.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

DATA_ROOT_ENV = "IMPRESSLEARN_DATA"


def default_cache_root(env: Mapping[str, str]) -> Path:
    """Return the per-user cache folder for data sets; it need not exist.

    Follows the XDG base directory convention: ``$XDG_CACHE_HOME/impresslearn`` when that variable
    holds an absolute path, else ``$HOME/.cache/impresslearn``.

    Raises:
        DataError: neither ``XDG_CACHE_HOME`` nor ``HOME`` (``USERPROFILE`` on Windows) is set.
    """
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "impresslearn"
    home = env.get("HOME") or env.get("USERPROFILE")
    if not home:
        raise DataError(
            "cannot place the per-user data cache: neither XDG_CACHE_HOME nor HOME is set; "
            f"set {DATA_ROOT_ENV} or pass --data-root to name the data folder"
        )
    return Path(home) / ".cache" / "impresslearn"


def resolve_data_root(
    flag: str | Path | None, env: Mapping[str, str], *, create: bool = False
) -> Path:
    """Return the data root: ``flag`` if given, else ``$IMPRESSLEARN_DATA``, else the user cache.

    An empty ``flag`` or variable counts as not given. A root named by the flag or the variable
    must be an existing folder, unless ``create`` (for ``data fetch``, which creates it); the cache
    default may not exist yet, which only matters once a data set is looked up there.

    Raises:
        DataError: the named root does not exist (and not ``create``) or is not a folder; the
            message says which path and where it came from.
    """
    if flag is not None and str(flag) != "":
        return existing_root(Path(flag), "the --data-root flag", create)
    value = env.get(DATA_ROOT_ENV, "")
    if value:
        return existing_root(Path(value), f"the {DATA_ROOT_ENV} environment variable", create)
    root = default_cache_root(env)
    logger.debug("data root %s (per-user cache default)", root)
    return root


def existing_root(path: Path, source: str, create: bool = False) -> Path:
    """``path`` made absolute, checked to be an existing folder (``source`` names where it came
    from in the error); with ``create`` a path that does not exist yet is fine."""
    path = path.absolute()
    if create and not path.exists():
        return path
    if not path.exists():
        raise DataError(f"data root {path} (from {source}) does not exist: name an existing folder")
    if not path.is_dir():
        raise DataError(f"data root {path} (from {source}) is not a folder")
    logger.debug("data root %s (from %s)", path, source)
    return path

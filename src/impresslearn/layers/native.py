"""The compiled kernel of :class:`~impresslearn.layers.TopKSelector`, where it was built.

``_topk.c`` is compiled into a small shared library when the package is installed
(``pip install``, through ``setup.py``; a C compiler is needed, and without one the install still
succeeds). It is loaded with ctypes, not imported: it holds plain C functions. Where it is
missing, :func:`load_kernel` returns ``None`` and the selector runs its NumPy code, which gives the
same masks bit for bit, more slowly (about 1.6x the dense LeNet-300-100 step instead of 1.3x).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import logging
from pathlib import Path

import numpy as np
from torch import Tensor

from impresslearn.errors import ConfigError

_TRIES = 8  # band widenings or narrowings per step before a fresh selection
_ABI = 1  # il_topk_abi() of the _topk.c these bindings are written for
log = logging.getLogger(__name__)


class _Arguments(ctypes.Structure):
    """``il_topk_t``: a selector's constant arguments of the kernel."""

    _fields_ = [
        ("n", ctypes.c_int64),
        ("k", ctypes.c_int64),
        ("mode", ctypes.c_int32),
        ("tries", ctypes.c_int32),
        ("td", ctypes.c_void_p),
        ("kept", ctypes.c_void_p),
        ("band", ctypes.c_void_p),
        ("vals", ctypes.c_void_p),
        ("tmp", ctypes.c_void_p),
        ("cap", ctypes.c_int64),
    ]


@functools.cache
def load_kernel() -> ctypes.CDLL | None:
    """The compiled library next to this file, or ``None`` where it was not built (or was built
    from another version of ``_topk.c``: then a warning says to reinstall)."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_topk{suffix}"
        if path.is_file():
            try:
                library = ctypes.CDLL(str(path))
                abi = library.il_topk_abi()
            except (OSError, AttributeError):
                abi = None
            if abi != _ABI:
                log.warning(
                    "%s was built from another version of _topk.c: using the NumPy top-k "
                    "selection; run `pip install -e .` again to rebuild it",
                    path,
                )
                return None
            p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
            library.il_topk_run.argtypes = [p, p, p, p]
            library.il_topk_run.restype = i32
            library.il_straight_through.argtypes = [p, p, p, p, i64, i32]
            library.il_straight_through.restype = None
            library.il_threshold_product.argtypes = [p, p, p, i64]
            library.il_threshold_product.restype = None
            library.il_topk_simd.argtypes = []
            library.il_topk_simd.restype = i32
            return library
    return None


SIMD = ("portable", "avx2", "avx512")


def kernel_info() -> dict[str, str | bool]:
    """Whether the compiled kernel is present, and the scan it runs on this machine."""
    library = load_kernel()
    return {
        "native_topk": library is not None,
        "native_scan": SIMD[library.il_topk_simd()] if library is not None else "none",
    }


class NativeBand:
    """One selector's state and scratch buffers for the kernel's ``il_topk_run``.

    It holds the selector's bool mask ``kept`` (bound once, updated in place), the threshold and
    the band half-width. :meth:`step` brings ``kept`` (and, when given, the product
    ``weight * kept``) from the last step's top-k to this step's; it returns ``False`` when the
    band could not hold the cut after a few tries (then the caller selects afresh, starting from
    :meth:`state`; ``kept`` and the product still agree).
    """

    def __init__(self, library: ctypes.CDLL, kept: np.ndarray, k: int, signed: bool) -> None:
        numel = kept.size
        cap = min(numel, max(4096, numel // 16))  # 8x the band the selector aims for
        self._buffers = (
            kept,
            np.zeros(2, dtype=np.float32),  # threshold, half-width
            np.empty(cap, dtype=np.int32),  # band positions
            np.empty(cap, dtype=np.float32),  # their values
            np.empty(cap, dtype=np.float32),  # a copy to select in
        )
        kept, self._td, band, vals, tmp = self._buffers
        self._simd = library.il_topk_simd()
        self._arguments = _Arguments(
            numel,
            k,
            int(signed) | self._simd << 1,
            _TRIES,
            self._td.ctypes.data,
            kept.ctypes.data,
            band.ctypes.data,
            vals.ctypes.data,
            tmp.ctypes.data,
            cap,
        )
        self._run = functools.partial(library.il_topk_run, ctypes.addressof(self._arguments))

    @property
    def scan(self) -> str:
        """The scan this selector runs: ``portable``, ``avx2`` or ``avx512``."""
        return SIMD[self._arguments.mode >> 1]

    def set_scan(self, name: str) -> None:
        """Run another scan than the fastest this machine has (the tests compare them)."""
        level = SIMD.index(name) if name in SIMD else -1
        if not 0 <= level <= self._simd:
            raise ConfigError(
                f"scan {name!r} does not run here: choose one of {list(SIMD[: self._simd + 1])}"
            )
        self._arguments.mode = (self._arguments.mode & 1) | level << 1

    def load(self, threshold: np.float32, delta: float) -> None:
        """Start from a selection made elsewhere: ``kept`` is ranked above ``threshold``."""
        self._td[0] = threshold
        self._td[1] = delta

    def state(self) -> tuple[np.float32, float]:
        """The threshold and band half-width the next step starts from."""
        return self._td[0], float(self._td[1])

    def step(
        self, scores: Tensor, weight: Tensor | None = None, product: Tensor | None = None
    ) -> bool:
        """``scores``: contiguous float32 on the CPU; ``product``: ``weight * kept`` before the
        call (contiguous float32, like ``weight``), kept in step."""
        return self.step_at(
            scores.data_ptr(),
            None if weight is None else weight.data_ptr(),
            None if product is None else product.data_ptr(),
        )

    def step_at(self, scores: int, weight: int | None, product: int | None) -> bool:
        """:meth:`step` given the tensors' data pointers."""
        return self._run(scores, weight, product) == 1

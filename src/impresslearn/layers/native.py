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
log = logging.getLogger(__name__)

# The C types the interface text of _topk.c names.
_CTYPES = {"p": ctypes.c_void_p, "i32": ctypes.c_int32, "i64": ctypes.c_int64, "void": None}
# What these bindings call, by name: a library that does not describe them is not used.
EXPECTED = {
    "il_topk_run": (("p", "p", "p", "p"), "i32"),
    "il_straight_through": (("p", "p", "p", "p", "i64", "i32"), "void"),
    "il_threshold_product": (("p", "p", "p", "i64"), "void"),
    "il_topk_simd": ((), "i32"),
}
STRUCT_FIELDS = ("n", "k", "mode", "tries", "td", "kept", "band", "vals", "tmp", "cap")


class InterfaceMismatch(Exception):
    """The library's description of its interface is not what these bindings call."""


def parse_interface(text: str) -> tuple[list[tuple[str, str]], dict[str, tuple]]:
    """The struct's fields ``[(name, type)]`` and the functions ``{name: (argument types, result
    type)}`` of ``_topk.c``'s interface text (``il_interface()``)."""
    fields, functions = [], {}
    for line in text.strip().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "struct":
            fields = [tuple(w.split(":")) for w in words[1:]]
            continue
        if "->" not in words:
            raise InterfaceMismatch(f"unreadable line {line!r}")
        arrow = words.index("->")
        functions[words[0]] = (tuple(words[1:arrow]), words[arrow + 1])
    for _, kind in [*fields, *((k, r) for args, r in functions.values() for k in args)]:
        if kind not in _CTYPES:
            raise InterfaceMismatch(f"unknown C type {kind!r}")
    return fields, functions


def bind(library: ctypes.CDLL) -> type[ctypes.Structure]:
    """Declare the library's functions to ctypes from its own description, check that it is
    what these bindings call and that the struct built from it has the compiler's layout; the
    ctypes struct of ``il_topk_t``. Raises :class:`InterfaceMismatch` otherwise."""
    library.il_interface.restype = ctypes.c_char_p
    library.il_interface.argtypes = []
    fields, functions = parse_interface(library.il_interface().decode())
    for name, signature in EXPECTED.items():
        if functions.get(name) != signature:
            raise InterfaceMismatch(f"{name}: {functions.get(name)} instead of {signature}")
    if tuple(name for name, _ in fields) != STRUCT_FIELDS:
        raise InterfaceMismatch(f"il_topk_t has fields {[n for n, _ in fields]}")
    for name, (arguments, result) in functions.items():
        function = getattr(library, name)
        function.argtypes = [_CTYPES[a] for a in arguments]
        function.restype = _CTYPES[result]
    struct = type(
        "IlTopkT", (ctypes.Structure,), {"_fields_": [(n, _CTYPES[t]) for n, t in fields]}
    )
    layout = (ctypes.c_int64 * (len(fields) + 1))()
    library.il_topk_layout.argtypes = [ctypes.c_void_p]
    library.il_topk_layout.restype = ctypes.c_int32
    count = library.il_topk_layout(ctypes.addressof(layout))
    ours = [ctypes.sizeof(struct), *(getattr(struct, n).offset for n, _ in fields)]
    if count != len(ours) or list(layout[:count]) != ours:
        raise InterfaceMismatch(
            f"il_topk_t's layout {list(layout[:count])} differs from its description's {ours}"
        )
    return struct


@functools.cache
def load_kernel() -> ctypes.CDLL | None:
    """The compiled library next to this file, or ``None`` where it was not built (or was built
    from another version of ``_topk.c``, whose interface is not what these bindings call: then
    a warning says to reinstall). The library's ctypes struct is ``library.arguments``."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_topk{suffix}"
        if path.is_file():
            try:
                library = ctypes.CDLL(str(path))
                library.arguments = bind(library)
            except (OSError, AttributeError, InterfaceMismatch) as e:
                log.warning(
                    "%s was built from another version of _topk.c (%s): using the NumPy top-k "
                    "selection; run `pip install -e .` again to rebuild it",
                    path,
                    e,
                )
                return None
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
        self._arguments = library.arguments(
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

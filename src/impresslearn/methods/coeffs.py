"""How a task's ImpressLearn coefficients are shaped and stored: its bytes per task.

A masked layer mixes its ``n`` impressions with coefficients of shape ``(n,)`` (one vector for
the whole layer) or ``(out, n)`` (one per output unit). Between the two ends a task can store
fewer numbers and expand them when the layer mixes:

* ``layer``: ``n`` numbers per layer (the paper's granularity);
* ``output_unit``: ``out * n`` per layer;
* ``classifier_unit``: per output unit in the last masked layer (the classifier, whose units are
  the task's classes), per layer elsewhere;
* ``groups``: the output units of each layer in ``G`` contiguous groups, one vector per group
  (``G * n`` per layer);
* ``low_rank``: per-unit coefficients of rank ``r``, ``alpha = u v^T`` with ``u`` of shape
  ``(out, r)`` and ``v`` of ``(n, r)`` (``(out + n) * r`` per layer).

The trained numbers are stored as float32, float16, or int8 with one float32 scale per tensor
(symmetric, ``round(x / scale)`` with ``scale = max|x| / 127``). A task is evaluated with the
stored (rounded) numbers, so its accuracy is that of what is kept, and its bytes are counted as
stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from impresslearn.errors import ConfigError

GRANULARITIES = ("layer", "output_unit", "classifier_unit", "groups", "low_rank")
COEFF_DTYPES = ("float32", "float16", "int8")
_INT8_MAX = 127


@dataclass(frozen=True)
class CoeffLayout:
    """One layer's coefficient shape: ``kind`` is ``layer``, ``unit``, ``groups`` or
    ``low_rank`` over ``out`` output units and ``n`` impressions."""

    kind: str
    out: int
    n: int
    groups: int = 1
    rank: int = 1

    @property
    def num_tensors(self) -> int:
        """How many trained tensors the layout has (two for low rank: ``u`` and ``v``)."""
        return 2 if self.kind == "low_rank" else 1

    @property
    def mixed_shape(self) -> tuple[int, ...]:
        """Shape of the coefficients the layer mixes with."""
        return (self.n,) if self.kind == "layer" else (self.out, self.n)

    def initial(self, gen: torch.Generator) -> list[Tensor]:
        """The trainable tensors of a new task, expanding to ``1/n`` everywhere. A low-rank
        layout's extra columns start small and random (drawn from ``gen``), so that they receive
        a gradient."""
        n = self.n
        if self.kind == "layer":
            return [torch.full((n,), 1.0 / n)]
        if self.kind == "unit":
            return [torch.full((self.out, n), 1.0 / n)]
        if self.kind == "groups":
            return [torch.full((self.groups, n), 1.0 / n)]
        u = torch.zeros(self.out, self.rank)
        v = torch.zeros(n, self.rank)
        u[:, 0], v[:, 0] = 1.0, 1.0 / n
        if self.rank > 1:
            v[:, 1:] = torch.randn(n, self.rank - 1, generator=gen) * (0.1 / n)
        return [u, v]

    def expand(self, params: list[Tensor]) -> Tensor:
        """The coefficients the layer mixes with (differentiable in ``params``)."""
        if self.kind in ("layer", "unit"):
            return params[0]
        if self.kind == "groups":
            return params[0][self.group_of_unit(params[0].device)]
        u, v = params
        return u @ v.T

    def rows(self, params: list[Tensor]) -> Tensor:
        """The distinct coefficient vectors, one per row (what the L1 regulariser counts)."""
        return self.expand(params) if self.kind == "low_rank" else params[0]

    def group_of_unit(self, device: torch.device | None = None) -> Tensor:
        """Group index of every output unit: ``G`` contiguous groups of nearly equal size."""
        return torch.arange(self.out, device=device) * self.groups // self.out

    def stored_bytes(self, dtype: str) -> int:
        shapes = {
            "layer": [(self.n,)],
            "unit": [(self.out, self.n)],
            "groups": [(self.groups, self.n)],
            "low_rank": [(self.out, self.rank), (self.n, self.rank)],
        }[self.kind]
        return sum(tensor_bytes(math.prod(s), dtype) for s in shapes)


def layouts(
    granularity: str, shapes: list[tuple[int, ...]], n: int, groups: int, rank: int
) -> list[CoeffLayout]:
    """The layout of every masked layer (weight ``shapes`` in module order) for ``granularity``."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is unknown; use one of {GRANULARITIES}")
    out = []
    for i, shape in enumerate(shapes):
        units = shape[0]
        if granularity == "layer":
            out.append(CoeffLayout("layer", units, n))
        elif granularity == "output_unit":
            out.append(CoeffLayout("unit", units, n))
        elif granularity == "classifier_unit":
            out.append(CoeffLayout("unit" if i == len(shapes) - 1 else "layer", units, n))
        elif granularity == "groups":
            out.append(CoeffLayout("groups", units, n, groups=min(groups, units)))
        else:
            out.append(CoeffLayout("low_rank", units, n, rank=min(rank, units, n)))
    return out


# ------------------------------------------------------------------------------- storage


def tensor_bytes(numel: int, dtype: str) -> int:
    """Bytes of ``numel`` numbers stored as ``dtype`` (int8 adds its float32 scale)."""
    return {"float32": 4 * numel, "float16": 2 * numel, "int8": numel + 4}[dtype]


def quantise(x: Tensor, dtype: str) -> dict[str, Tensor]:
    """``x`` as stored: ``{"values": ...}`` (float32, float16 or int8) and, for int8,
    ``{"scale": ...}`` (a float32 scalar)."""
    x = x.detach().float()
    if dtype == "float32":
        return {"values": x.clone()}
    if dtype == "float16":
        return {"values": x.to(torch.float16)}
    if dtype != "int8":
        raise ConfigError(f"coefficient dtype {dtype!r} is unknown; use one of {COEFF_DTYPES}")
    top = x.abs().max()
    scale = torch.where(top > 0, top / _INT8_MAX, torch.ones_like(top))
    values = torch.round(x / scale).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return {"values": values, "scale": scale.reshape(())}


def dequantise(stored: dict[str, Tensor]) -> Tensor:
    """The float32 numbers a stored tensor stands for."""
    values = stored["values"].float()
    return values * stored["scale"] if "scale" in stored else values


# -------------------------------------------------------------------- representations by name


def parse_representation(spec: str) -> dict[str, object]:
    """The ImpressLearn settings a representation names: ``GRANULARITY[:K][@DTYPE]``, with ``K``
    the number of groups (``groups:8``) or the rank (``low_rank:2``) and ``DTYPE`` how the
    numbers are stored (``layer@int8``, ``classifier_unit@float16``; default float32)."""
    text, _, dtype = spec.partition("@")
    granularity, colon, number = text.partition(":")
    settings: dict[str, object] = {"granularity": granularity, "coeff_dtype": dtype or "float32"}
    problem = None
    if granularity not in GRANULARITIES:
        problem = f"{granularity!r} is not one of {GRANULARITIES}"
    elif settings["coeff_dtype"] not in COEFF_DTYPES:
        problem = f"{dtype!r} is not one of {COEFF_DTYPES}"
    elif colon:
        if granularity not in ("groups", "low_rank"):
            problem = f"only groups:G and low_rank:R take a number, not {granularity}"
        elif not number.isdigit() or int(number) < 1:
            problem = f"{number!r} is not a positive whole number"
        else:
            settings["groups" if granularity == "groups" else "rank"] = int(number)
    if problem:
        raise ConfigError(
            f"representation {spec!r}: {problem}; write GRANULARITY[:K][@DTYPE], e.g. layer, "
            "classifier_unit@float16, groups:8@int8, low_rank:2"
        )
    return settings

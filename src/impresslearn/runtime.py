"""Where a run executes: its device and numeric precision.

The runtime is not part of the experiment: the same config runs on a CPU, a CUDA GPU or Apple's
MPS, and a run started on one resumes on another. Random numbers are always drawn on the CPU from
seeded generators and the results moved, so batch order, augmentation, initial scores and random
impressions do not depend on the device.

``precision="bf16"`` runs the forward passes of training and evaluation under
:func:`torch.autocast` with bfloat16 (meant for the residual backbones on CUDA). The trainable
scores and alphas, the stored masks and the batch-norm statistics stay float32 (autocast changes
only the precision of the matrix products and convolutions), and task inference runs in float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from impresslearn.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device named by ``spec``: ``auto`` (CUDA when available, else the CPU), ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigError: the name is not a device, or this machine does not have it.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}: use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} is not available: this machine has no CUDA GPU usable by torch "
                f"{torch.__version__} (use --device cpu, or auto)"
            )
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise ConfigError(
                f"device {spec!r} is not available: this machine has {count} CUDA GPU(s), "
                f"cuda:0..cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"device {spec!r} is not available: torch {torch.__version__} finds no Apple MPS "
                "device here (use --device cpu, or auto)"
            )
        return torch.device("mps")
    raise ConfigError(f"unsupported device {spec!r}: use {DEVICE_CHOICES}")


@dataclass(frozen=True)
class Runtime:
    """The device a run executes on and the precision of its forward passes."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")

    @classmethod
    def create(cls, device: str | torch.device = "auto", precision: str = "fp32") -> Runtime:
        """Resolve ``device`` (see :func:`resolve_device`) and check ``precision``."""
        return cls(resolve_device(device), precision)

    def autocast(self) -> AbstractContextManager:
        """The forward passes' precision for a block: nothing in fp32, bfloat16 autocast in bf16."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def synchronize(self) -> None:
        """Wait for the device's queued work (before reading a clock)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def device_name(self) -> str:
        """A readable name of the device, e.g. the GPU's model."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        if self.device.type == "mps":
            return "Apple MPS"
        return "cpu"

    def describe(self) -> dict[str, object]:
        """The entries of ``metrics.json`` that say where the run executed."""
        out: dict[str, object] = {
            "device": str(self.device),
            "device_name": self.device_name(),
            "precision": self.precision,
            "torch_version": torch.__version__,
        }
        if self.device.type == "cuda":
            out["peak_device_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out

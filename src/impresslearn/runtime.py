"""Where a run executes: its device, numeric precision and processes.

The runtime is not part of the experiment: the same config runs on a CPU, a CUDA GPU or Apple's
MPS, and a run started on one resumes on another. Random numbers are always drawn on the CPU from
seeded generators and the results moved, so batch order, augmentation, initial scores and random
impressions do not depend on the device.

``precision="bf16"`` runs the forward passes of training and evaluation under
:func:`torch.autocast` with bfloat16 (meant for the residual backbones on CUDA). The trainable
scores and alphas, the stored masks and the batch-norm statistics stay float32 (autocast changes
only the precision of the matrix products and convolutions), and task inference runs in float32.

With a ``torch.distributed`` process group (launched by ``torchrun`` or SLURM's ``srun``; the
command line sets it up), one run is spread over ``world_size`` processes, data parallel: every
process draws the same batch and takes its contiguous slice (:meth:`Runtime.rows`), the gradients
of the few trainable tensors are summed across processes every step
(:meth:`Runtime.all_reduce_gradients`), evaluation is split into whole batches whose counts are
summed, and only rank 0 writes. Without a process group every collective is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from impresslearn.errors import ConfigError, ImpressLearnError
from impresslearn.threads import ThreadChoice, choose_threads, usable_cores

T = TypeVar("T")
# How long a process that finished its share of dealt work waits for the others (a grid point or
# a repeat can take hours; the process group's own timeout bounds ordinary collectives).
PATIENT_WAIT = timedelta(days=7)
log = logging.getLogger(__name__)

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


class RanksDisagree(ImpressLearnError):
    """The processes of one run hold different state: they must never drift apart silently."""


@dataclass(frozen=True)
class Runtime:
    """The device a run executes on, the precision of its forward passes, and this process's
    place among the run's processes (``rank`` of ``world_size``; 0 of 1 without a group)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    threads: ThreadChoice | None = None  # None: torch's own setting, not chosen here
    workers: int = 0  # DataLoader workers decoding streamed image folders (0: this process)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")

    @classmethod
    def create(
        cls,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        *,
        distributed: bool | None = None,
        threads: str | int | None = None,
        recorded_threads: int | None = None,
        workers: str | int = "auto",
    ) -> Runtime:
        """Resolve ``device`` (see :func:`resolve_device`) and check ``precision``. With
        ``distributed`` (default: whether a ``torch.distributed`` process group is initialised)
        the runtime is this process's place in the group; with False, a run of its own.
        ``threads`` (``auto`` or a count; None leaves torch's setting alone) sets torch's
        intra-op threads, see :func:`impresslearn.threads.choose_threads` (``recorded_threads``:
        the count a resumed run started with). ``workers``: processes that decode streamed image
        folders (``auto``: one per usable core but one, at most 8, none under torch.distributed
        with more processes than cores); results do not depend on it."""
        resolved = resolve_device(device)
        if precision == "bf16" and resolved.type == "cpu":
            log.warning(
                "impresslearn: --precision bf16 on the CPU runs bfloat16 autocast, which is "
                "slower than fp32 on most CPUs and changes the results; it is meant for CUDA"
            )
        use_group = dist.is_available() and dist.is_initialized()
        if distributed is not None:
            use_group = use_group and distributed
        rank, world = (dist.get_rank(), dist.get_world_size()) if use_group else (0, 1)
        choice = None
        if threads is not None:
            choice = choose_threads(threads, world_size=world, recorded=recorded_threads)
            choice.apply()
        return cls(resolved, precision, rank, world, choice, resolve_workers(workers, world))

    # ------------------------------------------------------------------------- processes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files (rank 0 only)."""
        return self.rank == 0

    def alone(self) -> Runtime:
        """This process's device and precision, as a run of its own (e.g. one repeat of many)."""
        return Runtime(self.device, self.precision, threads=self.threads, workers=self.workers)

    def rows(self, total: int) -> slice:
        """This process's contiguous share of ``total`` rows (sizes differ by at most one; a share
        may be empty): the shares of ranks 0, 1, ... joined are the rows in order."""
        base, extra = divmod(total, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def mine(self, index: int) -> bool:
        """Whether item ``index`` of a list dealt round-robin (batches, tasks) is this rank's."""
        return index % self.world_size == self.rank

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the processes, in place (one flat buffer); a
        missing gradient (an empty share of the batch) counts as zero."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(p).clone()
            offset += g.numel()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of ``values`` over the processes (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def average_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the processes, in place."""
        if not self.distributed:
            return
        for t in tensors:
            dist.all_reduce(t)
            t.div_(self.world_size)

    def gather(self, value: T, *, patient: bool = False) -> list[T]:
        """Every process's ``value`` (any picklable object), in rank order. ``patient``: the
        processes may arrive far apart (each after its share of dealt work, which can take
        longer than the process group's timeout): gathered over a gloo group of their own that
        waits up to :data:`PATIENT_WAIT` (a process that dies is still noticed at once)."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        group = dist.new_group(backend="gloo", timeout=PATIENT_WAIT) if patient else None
        try:
            dist.all_gather_object(out, value, group=group)
        finally:
            if group is not None:
                dist.destroy_process_group(group)
        return out

    def deal(self, jobs: Sequence[Any], work: Callable[[Any], T]) -> dict[Any, T]:
        """``{job: work(job)}`` over ``jobs`` dealt round-robin among the processes and gathered
        (results moved to the CPU), in the order of ``jobs``; with one process, every job in
        order."""
        mine = {job: work(job) for i, job in enumerate(jobs) if self.mine(i)}
        if not self.distributed:
            return mine
        done: dict[Any, T] = {}
        results = {job: _to_cpu(value) for job, value in mine.items()}
        for part in self.gather(results, patient=True):
            done.update(part)
        return {job: done[job] for job in jobs}

    def on_writer(self, action: Callable[[], T]) -> T | None:
        """Run ``action`` on rank 0 only; every process raises its error if it failed there (so
        no rank waits forever for a writer that gave up)."""
        if not self.distributed:
            return action()
        result, error = None, None
        if self.is_writer:
            try:
                result = action()
            except ImpressLearnError as e:
                error = (type(e), str(e))
        error = self.gather(error)[0]
        if error is not None:
            kind, message = error
            raise kind(message)
        return result

    def check_same(self, digest: str, what: str) -> None:
        """Fail loudly unless every process holds the same ``digest`` of its state."""
        if not self.distributed:
            return
        digests = self.gather(digest)
        if len(set(digests)) > 1:
            ranks = ", ".join(f"rank {r}: {d[:12]}" for r, d in enumerate(digests))
            raise RanksDisagree(
                f"the processes hold different state after {what} ({ranks}); the run stops "
                "rather than drift apart silently"
            )

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        # nccl moves CUDA tensors only; gloo CPU tensors.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

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

    def available_memory(self) -> int | None:
        """Bytes of memory free for this run on its device now: the GPU's free memory on CUDA,
        the system's available memory (Linux ``MemAvailable``) on the CPU; None where unknown."""
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        if self.device.type != "cpu":
            return None
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def describe(self) -> dict[str, object]:
        """The entries of ``metrics.json`` that say where the run executed."""
        out: dict[str, object] = {
            "device": str(self.device),
            "device_name": self.device_name(),
            "precision": self.precision,
            "processes": self.world_size,
            "threads": torch.get_num_threads(),
            "threads_chosen_by": self.threads.reason if self.threads else "torch's own setting",
            "workers": self.workers,
            "torch_version": torch.__version__,
        }
        if self.device.type == "cuda":
            out["peak_device_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def resolve_workers(workers: str | int, world_size: int = 1) -> int:
    """The DataLoader workers for ``workers`` (``auto`` or a count >= 0)."""
    if workers == "auto":
        return max(0, min(8, usable_cores() // world_size - 1))
    try:
        count = int(workers)
    except (TypeError, ValueError):
        count = -1
    if count < 0 or str(count) != str(workers).strip():
        raise ConfigError(f"workers must be 'auto' or a whole number >= 0, got {workers!r}")
    return count


def _to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (also inside lists, tuples and dicts) on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value

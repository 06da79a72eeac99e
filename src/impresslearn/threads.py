"""How many intra-op threads torch uses: chosen from the cores actually free, stated, recorded.

torch's default is one thread per core, whether or not the cores are free. When another job
shares them, its OpenMP threads wait on one another for cores they do not get: the quickstart
takes minutes instead of seconds. ``choose_threads("auto", ...)`` picks, in this order:

1. a count given explicitly (``--threads N``);
2. the count a resumed run started with (recorded in its checkpoint), so that the resumed run
   equals an uninterrupted one (results are bit-identical for a given thread count only: a sum
   split over more threads adds in another order);
3. ``OMP_NUM_THREADS`` when the environment sets it (torch already follows it);
4. one per process under ``torch.distributed`` (the processes share the cores);
5. otherwise the cores this process may use (its CPU affinity, and a container's CPU quota) that
   are idle over a short sample of ``/proc/stat``, at least one.

Every shipped backbone uses a second core when it is free (the quickstart's LeNet-300-100 at
batch 128: 18 s on two threads against 30 s on one, on an idle 2-core machine), so the work's
size never lowers the count below the free cores.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from impresslearn.errors import ConfigError

SAMPLE_SECONDS = 0.2
# A core counts as free when at least this fraction of it was idle (over the sample; a core
# that is 80% idle still takes a thread better than it delays one).
FREE_ALLOWANCE = 0.3


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count and why it was chosen (both go into ``metrics.json``)."""

    count: int
    reason: str

    def apply(self) -> None:
        """Set torch's intra-op threads for this process."""
        if torch.get_num_threads() != self.count:
            torch.set_num_threads(self.count)


def parse_threads(text: str | int | None) -> str | int | None:
    """``auto``, a positive count, or None (leave torch's setting alone)."""
    if text is None or text == "auto":
        return text
    try:
        count = int(text)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or str(count) != str(text).strip():
        raise ConfigError(f"threads must be 'auto' or a whole number >= 1, got {text!r}")
    return count


def choose_threads(
    spec: str | int,
    *,
    world_size: int = 1,
    recorded: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ThreadChoice:
    """The thread count for ``spec`` (``auto`` or a count); see the module's docstring."""
    spec = parse_threads(spec)
    env = os.environ if env is None else env
    if isinstance(spec, int):
        return ThreadChoice(spec, f"--threads {spec}")
    if recorded:
        return ThreadChoice(recorded, "the count the resumed run started with")
    if env.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(torch.get_num_threads(), f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    if world_size > 1:
        return ThreadChoice(1, f"one per process ({world_size} processes)")
    usable = usable_cores()
    free = free_cores()
    count = max(1, min(usable, math.floor(free + FREE_ALLOWANCE)))
    return ThreadChoice(count, f"{free:.1f} of {usable} usable cores free")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def _cgroup_quota() -> float | None:
    """A cgroup v2 CPU quota in cores (``/sys/fs/cgroup/cpu.max``), None when unlimited."""
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def free_cores(sample_seconds: float = SAMPLE_SECONDS) -> float:
    """How many of this process's cores were idle over ``sample_seconds`` (``/proc/stat``); on
    a system without it, the cores less the 1-minute load average."""
    usable = usable_cores()
    before = _cpu_times()
    if before is None:
        try:
            return max(0.0, usable - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(usable)
    time.sleep(sample_seconds)
    after = _cpu_times()
    if after is None:
        return float(usable)
    try:
        mine = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        mine = sorted(after)
    idle = 0.0
    for cpu in mine:
        if cpu in before and cpu in after:
            total = after[cpu][0] - before[cpu][0]
            idle += (after[cpu][1] - before[cpu][1]) / total if total > 0 else 1.0
    return min(idle, float(usable))


def _cpu_times() -> dict[int, tuple[int, int]] | None:
    """Per CPU: (all jiffies, idle + iowait jiffies), from ``/proc/stat``; None without it."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields[:8]]
            out[int(name[3:])] = (sum(values), values[3] + values[4])
    return out

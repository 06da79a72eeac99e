"""The run context: where and how an experiment runs, apart from what it is.

An experiment's config says what runs (and is saved with the run); the :class:`RunContext` says
where: the runtime (device, precision and the ``torch.distributed`` process group), the data root,
the run folder and how to treat it (overwrite, resume), progress bars and logging. The command
line or the Python API builds it once and hands it to a recipe (:mod:`~impresslearn.runners.recipes`);
a recipe that runs pieces elsewhere derives its context from it (:meth:`RunContext.in_folder`,
:meth:`RunContext.alone`) instead of rebuilding it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from impresslearn.runners.tensorboard import check_log
from impresslearn.runtime import Runtime


@dataclass(frozen=True)
class RunContext:
    """Where an experiment runs. ``out_dir``: its run folder (None: nothing is written);
    ``overwrite``: replace a run already there; ``resume``: continue the run there at its next
    task; ``log``: also write TensorBoard event files (``"tensorboard"``)."""

    runtime: Runtime
    data_root: Path | None = None
    out_dir: Path | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = False
    log: str | None = None

    def __post_init__(self) -> None:
        check_log(self.log)
        if self.out_dir is not None and not isinstance(self.out_dir, Path):
            object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.data_root is not None and not isinstance(self.data_root, Path):
            object.__setattr__(self, "data_root", Path(self.data_root))

    @classmethod
    def create(
        cls,
        data_root: Path | str | None = None,
        out_dir: Path | str | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        overwrite: bool = False,
        resume: bool = False,
        progress: bool = False,
        log: str | None = None,
        threads: str | int | None = None,
        recorded_threads: int | None = None,
        workers: str | int = "auto",
    ) -> RunContext:
        """A context on ``device`` / ``precision`` (a ConfigError for a device that does not
        exist), in this process's ``torch.distributed`` group if it is in one; ``threads``
        (``auto`` or a count) sets torch's intra-op threads (None: left as they are), see
        :func:`impresslearn.threads.choose_threads`; ``workers`` decode streamed image folders."""
        return cls(
            Runtime.create(
                device,
                precision,
                threads=threads,
                recorded_threads=recorded_threads,
                workers=workers,
            ),
            None if data_root is None else Path(data_root),
            None if out_dir is None else Path(out_dir),
            overwrite=overwrite,
            resume=resume,
            progress=progress,
            log=log,
        )

    @property
    def shows_progress(self) -> bool:
        """Progress bars are drawn by the writing process only."""
        return self.progress and self.runtime.is_writer

    def in_folder(self, out_dir: Path, *, resume: bool = False) -> RunContext:
        """The same context writing ``out_dir`` (e.g. one repeat of several): resumed there, or
        started afresh (replacing what a stopped attempt left)."""
        return replace(self, out_dir=Path(out_dir), resume=resume, overwrite=not resume)

    def alone(self) -> RunContext:
        """The same context on this process alone (a piece of work dealt to it)."""
        return replace(self, runtime=self.runtime.alone())

"""Task inference's settings: the ``inference`` section of an experiment config.

Plain data (no torch), so that the experiment config can hold it whole. The procedures and
objectives it names are implemented in :mod:`impresslearn.inference.procedures`; a test checks
that the names here and the dispatch table there agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from impresslearn.errors import ConfigError

OBJECTIVES = ("entropy", "superfluous")
PROCEDURES = ("oneshot", "binary", "entropy_fit", "shortlist", "binary_shortlist", "exhaustive")
VERIFYING = ("shortlist", "binary_shortlist")  # a shortlist, then each candidate verified
VERIFIED = (*VERIFYING, "exhaustive")  # every procedure that verifies candidates: raw or calibrated
VERIFICATIONS = ("raw", "calibrated", "auto")


@dataclass(frozen=True)
class InferenceConfig:
    """How the task of an unlabelled test batch is inferred (``eval.scenario`` GNs or GNu, and
    the slot of a test batch after an NNs stream).

    The task is inferred once per test batch of ``batch`` images, from its first ``images``
    images (1 = one-shot from a single image), by ``procedure``: ``oneshot``, ``binary``,
    ImpressLearn's ``entropy_fit``, ``shortlist`` (the ``shortlist_size`` tasks the one-shot
    gradient ranks best, each verified by its own model), ``binary_shortlist`` (binary search
    stopped at ``shortlist_size`` candidates, each verified) or ``exhaustive`` (every task
    verified), on ``objective`` (``entropy`` = H, ``superfluous`` = G).
    ``test_images``: evaluate on the first this many test images of each task (0 = all;
    one-shot superposition of 250 tasks costs ~0.16 s per batch on one CPU core).
    ``tasks``: infer the test batches of every task (0), or of a sample of this many tasks drawn
    once from the scenario's seed (the same sample for every method on the same stream): on a
    long stream SupSup's superposition costs O(T) per batch, so inferring every task is O(T²).
    ``verification``: how the verifying procedures compare candidates: by the objective as it is
    (``raw``) or ``calibrated``, each candidate's value minus its task's reference (its own
    model's mean value on the first ``reference_images`` training images of its task, measured
    when the task is learned), or ``auto``: whichever of the two found each new task more often
    among the tasks learned before it, on its next ``reference_images`` training images (a
    self-test after every task).
    """

    procedure: str = "oneshot"
    objective: str = "entropy"
    batch: int = 128
    images: int = 1
    test_images: int = 0
    tasks: int = 0
    shortlist_size: int = 5
    verification: str = "raw"
    reference_images: int = 1024

    def __post_init__(self) -> None:
        if self.procedure not in PROCEDURES:
            raise ConfigError(
                f"inference.procedure={self.procedure!r}: use one of {', '.join(PROCEDURES)}"
            )
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"inference.objective={self.objective!r}: use one of {', '.join(OBJECTIVES)}"
            )
        if self.batch < 1:
            raise ConfigError(f"inference.batch must be >= 1, got {self.batch}")
        if not 1 <= self.images <= self.batch:
            raise ConfigError(
                f"need 1 <= inference.images <= inference.batch, got {self.images} and {self.batch}"
            )
        if self.test_images < 0:
            raise ConfigError(
                f"inference.test_images must be >= 0 (0 = every test image), got {self.test_images}"
            )
        if self.tasks < 0:
            raise ConfigError(
                f"inference.tasks must be >= 0 (0 = every task, K = a seeded sample of K tasks), "
                f"got {self.tasks}"
            )
        if self.shortlist_size < 1:
            raise ConfigError(f"inference.shortlist_size must be >= 1, got {self.shortlist_size}")
        if self.verification not in VERIFICATIONS:
            raise ConfigError(
                f"inference.verification={self.verification!r}: use one of "
                f"{', '.join(VERIFICATIONS)}"
            )
        if self.reference_images < 1:
            raise ConfigError(
                f"inference.reference_images must be >= 1, got {self.reference_images}"
            )
        if self.verification != "raw" and self.procedure not in VERIFIED:
            raise ConfigError(
                f"inference.verification={self.verification} applies to the verifying "
                f"procedures {', '.join(VERIFIED)}, not inference.procedure={self.procedure!r}"
            )

    def unused_settings(self) -> dict[str, str]:
        """The fields these settings do not read, and why."""
        unused = {}
        if self.procedure not in ("shortlist", "binary_shortlist"):
            unused["shortlist_size"] = f"inference.procedure={self.procedure} keeps no shortlist"
        if self.verification == "raw":
            unused["reference_images"] = "raw verification measures no references"
        return unused

    @property
    def calibrated(self) -> bool:
        """Whether inference needs each task's reference (and, for ``auto``, its self-test)."""
        return self.verification != "raw"

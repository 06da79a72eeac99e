"""Task inference: which learned task does an unlabelled batch come from?

* :mod:`~impresslearn.inference.config`: :class:`InferenceConfig`, the ``inference`` section of
  an experiment (procedure, objective, batch, verification), plain data;
* :mod:`~impresslearn.inference.procedures`: the objectives and the procedures (SupSup's
  one-shot and binary search, ImpressLearn's ``entropy_fit``, shortlists and verification) as one
  dispatch table, :data:`PROCEDURE_TABLE`;
* :mod:`~impresslearn.inference.calibration`: each task's reference and self-test, for
  calibrated and auto verification;
* :mod:`~impresslearn.inference.evaluate`: accuracy with the task inferred (GNs, GNu), per task
  and over a finished stream.

A method takes part through ``learned_tasks()``, ``mixed_coeffs(beta)`` and ``task_context(t)``
(and, for ``entropy_fit``, ``entropy_fit_start()`` and ``nearest_task()``); it declares the
procedures it offers in :attr:`~impresslearn.methods.Method.procedures`.
"""

from impresslearn.inference.calibration import (
    SELF_TEST_CANDIDATES,
    Calibration,
    calibrate_task,
    chosen_verification,
    reference_value,
    self_test,
    verification_references,
)
from impresslearn.inference.config import (
    OBJECTIVES,
    PROCEDURES,
    VERIFICATIONS,
    VERIFIED,
    VERIFYING,
    InferenceConfig,
)
from impresslearn.inference.evaluate import (
    INFERRED_SCENARIOS,
    InferredEvaluation,
    evaluate_inferred,
    evaluate_without_task_ids,
)
from impresslearn.inference.procedures import (
    PROCEDURE_TABLE,
    Inference,
    beta_gradient,
    candidates_for,
    check_inference,
    fit_alphas,
    halve,
    infer_task,
    nearest_task,
    objective_value,
    oneshot_gradient,
    oneshot_margin,
    run_procedure,
    shortlist,
    verification_value,
    verify,
)

__all__ = [
    "INFERRED_SCENARIOS",
    "OBJECTIVES",
    "PROCEDURES",
    "PROCEDURE_TABLE",
    "SELF_TEST_CANDIDATES",
    "VERIFICATIONS",
    "VERIFIED",
    "VERIFYING",
    "Calibration",
    "Inference",
    "InferenceConfig",
    "InferredEvaluation",
    "beta_gradient",
    "calibrate_task",
    "candidates_for",
    "check_inference",
    "chosen_verification",
    "evaluate_inferred",
    "evaluate_without_task_ids",
    "fit_alphas",
    "halve",
    "infer_task",
    "nearest_task",
    "objective_value",
    "oneshot_gradient",
    "oneshot_margin",
    "reference_value",
    "run_procedure",
    "self_test",
    "shortlist",
    "verification_references",
    "verification_value",
    "verify",
]

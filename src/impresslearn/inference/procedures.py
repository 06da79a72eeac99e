"""The task-inference procedures and their objectives, as one dispatch table.

Which learned task does an unlabelled batch come from?

SupSup (Wortsman et al. 2020, section 3): superpose every learned task with a mixing vector beta
(uniform, requiring grad) and follow the gradient of an objective of the outputs:

* **one-shot**: one forward/backward; the task is the argmin of d(objective)/d(beta);
* **binary**: repeatedly keep the half of the candidates with the most negative gradient until
  one remains (ceil(log2 T) rounds).
* **shortlist**: the one-shot gradient ranks all tasks in one pass; the ``k`` best
  (``inference.shortlist_size``) are then *verified*: each candidate's own model (its mask, or its
  alphas, and its batch-norm statistics) classifies the batch, and the candidate whose outputs
  score best on the objective wins. One forward/backward pass plus ``k`` forward passes, whatever
  the number of tasks T (for ImpressLearn every pass mixes its ``n`` impressions only).
* **exhaustive**: every task verified (T forward passes): the accuracy reference for the
  shortlist, which tells how much of an error is the shortlist's and how much the objective's.
* **entropy_fit** (methods with coefficient vectors per task: ImpressLearn): fit a fresh
  coefficient vector per layer to the unlabelled batch by a few Adam steps of entropy minimisation
  in alpha space (starting from ``method.entropy_fit_start()``, ImpressLearn's mean of the stored
  alphas), then pick the stored task whose alphas are nearest (``method.nearest_task``); the
  fitted alphas can also classify the batch directly.

Verification compares the candidates' objective values as they are (``raw``) or ``calibrated``:
each minus the task's **reference**, its own model's mean value on the first training images of
its task, measured when the task was learned (a few bytes per task; no data is kept). Models are
not equally confident: an ImpressLearn impression task (a dedicated mask) is sharper than a
combination task, and wins batches of its neighbours on raw entropy; relative to what each model
scores on its own data, the right task stands out again.

Neither rule wins everywhere: calibration helps most where every task's model is good, and hurts
where some models are poor (unsure on any data, they look typical everywhere). ``auto`` decides
per run without test data: when a task has been learned, the next training images of its task
(after those of its reference) are verified, batch by batch, among that task and the tasks
learned just before it, with raw and with calibrated values (:func:`self_test`); inference then
uses calibrated values only if they found the tasks significantly more often over the stream
(:func:`chosen_verification`).

Objectives: ``entropy`` (H, mean output entropy) and ``superfluous`` (G: with extra output neurons
that are never targets, the mean logsumexp of the logits with the real-class logits detached).

Beta enters the network only through each layer's coeffs, which each method derives from it
(``method.mixed_coeffs(beta)``): SupSup's coeffs are beta itself over its T stored masks;
ImpressLearn's are ``gamma[l] = beta @ alpha[:, l]`` over its n impressions, so one
forward/backward over n masks gives the gradient for all T tasks (Bhardwaj et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from impresslearn.errors import ConfigError
from impresslearn.inference.config import OBJECTIVES, PROCEDURES, VERIFIED, InferenceConfig
from impresslearn.layers import use_coeffs

ENTROPY_FIT_STEPS = 20  # Adam steps of entropy_fit per batch


def check_inference(config: InferenceConfig, method, model, num_classes: int) -> None:
    """Refuse, before a run starts, inference settings that would fail after the stream: the G
    objective without superfluous outputs, and a procedure the method does not declare
    (:attr:`~impresslearn.methods.Method.procedures`)."""
    if config.objective == "superfluous":
        outputs = [m.out_features for m in model.modules() if hasattr(m, "out_features")]
        if outputs and outputs[-1] <= num_classes:
            raise ConfigError(
                "the 'superfluous' objective needs more outputs than classes: set "
                "backbone.num_outputs (e.g. 100 or 500)"
            )
    check_procedure(method, config.procedure)


def check_procedure(method, procedure: str) -> None:
    """Refuse a procedure the method does not declare (:attr:`Method.procedures
    <impresslearn.methods.Method.procedures>`)."""
    offered = getattr(method, "procedures", None)
    if offered is not None and procedure not in offered:
        hint = (
            " (entropy_fit needs coefficient vectors per task: method.name=impresslearn)"
            if procedure == "entropy_fit"
            else ""
        )
        raise ConfigError(
            f"inference.procedure={procedure} is not offered by method {method.name!r}: use one "
            f"of {', '.join(sorted(offered))}{hint}"
        )


def objective_value(
    logits: Tensor, objective: str, num_classes: int, labels: Tensor | None = None
) -> Tensor:
    """The scalar whose gradient wrt beta points away from the right task. ``cross_entropy``
    needs the ``labels``: it serves NNs' new-task test, on training batches. It is taken over the
    real classes only: over superfluous outputs too, any trained mask would beat an untrained one
    on any data, by pushing the superfluous logits down."""
    if objective == "cross_entropy":
        if labels is None:
            raise ConfigError("the 'cross_entropy' objective needs labels (NNs training batches)")
        return F.cross_entropy(logits[:, :num_classes], labels)
    if objective == "entropy":
        log_p = F.log_softmax(logits, dim=1)
        return -(log_p.exp() * log_p).sum(1).mean()
    if objective == "superfluous":
        if logits.shape[1] <= num_classes:
            raise ConfigError(
                "the 'superfluous' objective needs more outputs than classes: set "
                "backbone.num_outputs (e.g. 100 or 500)"
            )
        mixed = torch.cat([logits[:, :num_classes].detach(), logits[:, num_classes:]], dim=1)
        return mixed.logsumexp(1).mean()
    raise ConfigError(f"unknown inference objective {objective!r}; use one of {OBJECTIVES}")


def beta_gradient(
    method, x: Tensor, beta: Tensor, objective: str, num_classes: int, labels: Tensor | None = None
) -> Tensor:
    """d(objective)/d(beta) for the superposition of the method's tasks weighted by ``beta``."""
    beta = beta.detach().requires_grad_(True)
    with torch.enable_grad(), use_coeffs(method.model, method.mixed_coeffs(beta)):
        value = objective_value(method.model(x), objective, num_classes, labels)
        (grad,) = torch.autograd.grad(value, beta)
    return grad


def fit_alphas(
    method, x: Tensor, objective: str, num_classes: int, steps: int = 20, lr: float = 0.05
) -> list[Tensor]:
    """Per-layer alphas fitted to the unlabelled batch ``x`` by entropy minimisation, from
    ``method.entropy_fit_start()`` (a ConfigError for methods without coefficient vectors)."""
    start = method.entropy_fit_start()
    params = [torch.nn.Parameter(a.clone()) for a in start]
    optimizer = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            with use_coeffs(method.model, params):
                objective_value(method.model(x), objective, num_classes).backward()
            optimizer.step()
    return [p.detach() for p in params]


def nearest_task(method, fitted: list[Tensor]) -> int:
    """The stored task whose coeffs are nearest to ``fitted`` (``method.nearest_task``;
    ImpressLearn: squared L2 over all layers)."""
    return method.nearest_task(fitted)


def oneshot_gradient(method, x: Tensor, objective: str, num_classes: int) -> Tensor:
    """d(objective)/d(beta) at the uniform superposition of all learned tasks (one entry per
    task of ``method.learned_tasks()``): SupSup's one-shot picks the most negative entry."""
    num = len(method.learned_tasks())
    beta = torch.full((num,), 1.0 / num, device=method.device)
    return beta_gradient(method, x, beta, objective, num_classes)


def oneshot_margin(grad: Tensor, true_index: int) -> float:
    """How clearly a one-shot gradient singles out the true task: the other tasks' mean gradient
    minus the true task's, in standard deviations of the other tasks' gradients. Large is
    decisive; the one-shot pick is right when the true task's entry is below every other, which
    among T - 1 others takes a margin of roughly ``sqrt(2 ln T)`` or more."""
    others = torch.cat([grad[:true_index], grad[true_index + 1 :]])
    if len(others) < 2:
        return float("nan")
    return float((others.mean() - grad[true_index]) / others.std().clamp_min(1e-30))


def verification_value(logits: Tensor, objective: str, num_classes: int) -> Tensor:
    """How badly one task's own outputs explain a batch (lower is better): the mean output entropy
    (``entropy``), or the mean log-probability the outputs put on the superfluous outputs, which
    no task ever trains as targets (``superfluous``)."""
    if objective == "superfluous":
        return (logits[:, num_classes:].logsumexp(1) - logits.logsumexp(1)).mean()
    return objective_value(logits, "entropy", num_classes)


@torch.no_grad()
def verify(
    method,
    x: Tensor,
    candidates: list[int],
    objective: str,
    num_classes: int,
    references: Mapping[int, float] | None = None,
) -> Tensor:
    """:func:`verification_value` of each candidate task's own model on ``x``: one forward pass
    per candidate, with its stored masks or coeffs and its batch-norm statistics. With
    ``references`` (calibrated verification), each value minus its task's reference."""
    values = []
    for task in candidates:
        with method.task_context(task):
            value = verification_value(method.model(x).float(), objective, num_classes)
        if references is not None:
            value = value - references[task]
        values.append(value)
    return torch.stack(values)


def shortlist(method, x: Tensor, objective: str, num_classes: int, size: int) -> list[int]:
    """The ``size`` tasks the one-shot gradient ranks best (most negative first), task ids."""
    tasks = method.learned_tasks()
    grad = oneshot_gradient(method, x, objective, num_classes)
    order = torch.argsort(grad, stable=True)[: min(size, len(tasks))]
    return [tasks[int(i)] for i in order]


def halve(method, x: Tensor, objective: str, num_classes: int, size: int) -> tuple[list[int], int]:
    """SupSup's binary search, stopped once at most ``size`` candidates remain: each round
    superposes the remaining tasks uniformly and keeps the half the gradient ranks best. The
    candidates (task ids) and the number of rounds (``ceil(log2(T / size))``)."""
    tasks = method.learned_tasks()
    num = len(tasks)
    candidates = torch.arange(num, device=method.device)
    rounds = 0
    while len(candidates) > size:
        beta = torch.zeros(num, device=method.device)
        beta[candidates] = 1.0 / len(candidates)
        grad = beta_gradient(method, x, beta, objective, num_classes)[candidates]
        keep = math.ceil(len(candidates) / 2)
        candidates = candidates[torch.argsort(grad, stable=True)[:keep]]
        rounds += 1
    return [tasks[int(i)] for i in candidates], rounds


def candidates_for(
    method, x: Tensor, procedure: str, objective: str, num_classes: int, size: int
) -> tuple[list[int], int]:
    """The tasks a verifying procedure verifies, and the gradient rounds it took to list them:
    ``shortlist`` (one one-shot pass), ``binary_shortlist`` (halving) or ``exhaustive`` (all)."""
    if procedure == "shortlist":
        return shortlist(method, x, objective, num_classes, size), 1
    if procedure == "binary_shortlist":
        return halve(method, x, objective, num_classes, size)
    return method.learned_tasks(), 0


@dataclass(frozen=True)
class Inference:
    """What one procedure found for one batch: the ``task`` id and the gradient ``rounds`` it
    took, and what it looked at on the way: the one-shot gradient over the learned tasks
    (``grad``, one-shot only), the ``candidates`` it verified (verifying procedures), the
    ``fitted`` coeffs (``entropy_fit``)."""

    task: int
    rounds: int
    grad: Tensor | None = None
    candidates: list[int] | None = None
    fitted: list[Tensor] | None = None


Procedure = Callable[..., Inference]


def _oneshot(method, x, objective, num_classes, shortlist_size, references) -> Inference:
    grad = oneshot_gradient(method, x, objective, num_classes)
    return Inference(method.learned_tasks()[int(grad.argmin())], 1, grad=grad)


def _binary(method, x, objective, num_classes, shortlist_size, references) -> Inference:
    (task,), rounds = halve(method, x, objective, num_classes, 1)
    return Inference(task, rounds)


def _entropy_fit(method, x, objective, num_classes, shortlist_size, references) -> Inference:
    fitted = fit_alphas(method, x, objective, num_classes, ENTROPY_FIT_STEPS)
    return Inference(nearest_task(method, fitted), ENTROPY_FIT_STEPS, fitted=fitted)


def _verifying(procedure: str) -> Procedure:
    def verifying(method, x, objective, num_classes, shortlist_size, references) -> Inference:
        candidates, rounds = candidates_for(
            method, x, procedure, objective, num_classes, shortlist_size
        )
        values = verify(method, x, candidates, objective, num_classes, references)
        return Inference(candidates[int(torch.argmin(values))], rounds, candidates=candidates)

    return verifying


# The one dispatch table of the procedures: name -> function(method, x, objective, num_classes,
# shortlist_size, references) -> Inference. Its names are inference.config.PROCEDURES.
PROCEDURE_TABLE: dict[str, Procedure] = {
    "oneshot": _oneshot,
    "binary": _binary,
    "entropy_fit": _entropy_fit,
    **{name: _verifying(name) for name in VERIFIED},
}


def run_procedure(
    method,
    x: Tensor,
    procedure: str,
    objective: str,
    num_classes: int,
    shortlist_size: int = 5,
    references: Mapping[int, float] | None = None,
) -> Inference:
    """Infer the task of the batch ``x`` by ``procedure`` (:data:`PROCEDURE_TABLE`).
    ``references``: calibrated verification (verifying procedures only). With one learned task
    that task is the answer, without a pass (``entropy_fit`` still fits its coeffs, which can
    classify the batch themselves)."""
    tasks = method.learned_tasks()
    if not tasks:
        raise ValueError("no task has been learned yet")
    run = PROCEDURE_TABLE.get(procedure)
    if run is None:
        raise ConfigError(f"unknown inference procedure {procedure!r}; use one of {PROCEDURES}")
    check_procedure(method, procedure)
    if len(tasks) == 1 and procedure != "entropy_fit":
        return Inference(tasks[0], 0)
    return run(method, x, objective, num_classes, shortlist_size, references)


def infer_task(
    method,
    x: Tensor,
    *,
    procedure: str = "oneshot",
    objective: str = "entropy",
    num_classes: int,
    shortlist_size: int = 5,
    references: Mapping[int, float] | None = None,
) -> tuple[int, int]:
    """The task id inferred for the batch ``x``, and the number of gradient rounds used.
    ``references``: calibrated verification (verifying procedures only)."""
    found = run_procedure(method, x, procedure, objective, num_classes, shortlist_size, references)
    return found.task, found.rounds

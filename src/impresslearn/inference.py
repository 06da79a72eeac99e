"""Task inference: which learned task does an unlabelled batch come from?

SupSup (Wortsman et al. 2020, section 3): superpose every learned task with a mixing vector beta
(uniform, requiring grad) and follow the gradient of an objective of the outputs:

* **one-shot**: one forward/backward; the task is the argmin of d(objective)/d(beta);
* **binary**: repeatedly keep the half of the candidates with the most negative gradient until
  one remains (ceil(log2 T) rounds).

Objectives: ``entropy`` (H, mean output entropy) and ``superfluous`` (G: with extra output neurons
that are never targets, the mean logsumexp of the logits with the real-class logits detached).

Beta enters the network only through each layer's coeffs, which each method derives from it
(``method.mixed_coeffs(beta)``): SupSup's coeffs are beta itself over its T stored masks;
ImpressLearn's are ``gamma[l] = beta @ alpha[:, l]`` over its n impressions, so one
forward/backward over n masks gives the gradient for all T tasks (Bhardwaj et al. 2022).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from impresslearn.errors import ConfigError
from impresslearn.layers import use_coeffs

Objective = Literal["entropy", "superfluous"]
OBJECTIVES = ("entropy", "superfluous")
PROCEDURES = ("oneshot", "binary")


def objective_value(logits: Tensor, objective: str, num_classes: int) -> Tensor:
    """The scalar whose gradient wrt beta points away from the right task."""
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


def beta_gradient(method, x: Tensor, beta: Tensor, objective: str, num_classes: int) -> Tensor:
    """d(objective)/d(beta) for the superposition of the method's tasks weighted by ``beta``."""
    beta = beta.detach().requires_grad_(True)
    with torch.enable_grad(), use_coeffs(method.model, method.mixed_coeffs(beta)):
        value = objective_value(method.model(x), objective, num_classes)
        (grad,) = torch.autograd.grad(value, beta)
    return grad


def infer_task(
    method,
    x: Tensor,
    *,
    procedure: str = "oneshot",
    objective: str = "entropy",
    num_classes: int,
) -> tuple[int, int]:
    """The task id inferred for the batch ``x``, and the number of gradient rounds used."""
    tasks = method.learned_tasks()
    if not tasks:
        raise ValueError("no task has been learned yet")
    num = len(tasks)
    if num == 1:
        return tasks[0], 0
    if procedure == "oneshot":
        beta = torch.full((num,), 1.0 / num)
        grad = beta_gradient(method, x, beta, objective, num_classes)
        return tasks[int(grad.argmin())], 1
    if procedure != "binary":
        raise ConfigError(f"unknown inference procedure {procedure!r}; use one of {PROCEDURES}")
    candidates = torch.arange(num)
    rounds = 0
    while len(candidates) > 1:
        beta = torch.zeros(num)
        beta[candidates] = 1.0 / len(candidates)
        grad = beta_gradient(method, x, beta, objective, num_classes)[candidates]
        keep = math.ceil(len(candidates) / 2)
        candidates = candidates[torch.argsort(grad, stable=True)[:keep]]
        rounds += 1
    return tasks[int(candidates[0])], rounds


def evaluate_inferred(
    method,
    data,
    true_task: int,
    *,
    scenario: str,
    procedure: str,
    objective: str,
    batch: int,
    images: int,
    num_classes: int,
) -> tuple[float, float]:
    """(accuracy, task-inference accuracy) on ``data`` of task ``true_task`` with the task
    inferred once per batch of ``batch`` images from its first ``images`` images. In GNu a batch
    whose task is wrong counts as all wrong; in GNs it is classified with the inferred task."""
    correct = right_task = 0
    for start in range(0, len(data), batch):
        x, y = data.x[start : start + batch], data.y[start : start + batch]
        task, _ = infer_task(
            method, x[:images], procedure=procedure, objective=objective, num_classes=num_classes
        )
        if task == true_task:
            right_task += len(y)
        if task == true_task or scenario == "GNs":
            with torch.no_grad(), method.task_context(task):
                pred = method.model(x)[:, :num_classes].argmax(1)
            correct += int((pred == y).sum())
    return correct / len(data), right_task / len(data)

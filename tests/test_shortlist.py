"""Shortlist-then-verify task inference: one ranking pass, then k candidates' own models."""

import pytest
import torch

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.inference import infer_task, shortlist, verify
from impresslearn.layers import masked_layers
from impresslearn.methods import ImpressLearn, ImpressLearnConfig, SupSup, SupSupConfig
from impresslearn.runners import run_experiment

FIVE_TASKS = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=5",
    "train.iterations=150",
    "train.lr=1e-3",
    "backbone.num_outputs=100",
]


@pytest.fixture(scope="module")
def learned():
    """Five well-separated real tasks (PermutedMNIST on the embedded data), SupSup masks."""
    return run_experiment(apply_overrides(ExperimentConfig(), FIVE_TASKS), None)


def test_the_shortlist_holds_the_true_task_on_separated_real_tasks(learned):
    for t in range(5):
        data = learned.scenario.test_data(t)
        for start in range(0, 512, 16):  # 32 batches of 16 images per task
            x = data.inputs(slice(start, start + 16))
            for objective in ("entropy", "superfluous"):
                candidates = shortlist(learned.method, x, objective, 10, size=2)
                assert t in candidates, (t, start, objective, candidates)


def test_shortlist_of_all_tasks_equals_exhaustive_verification(learned):
    for t in range(5):
        x = learned.scenario.test_data(t).inputs(slice(0, 8))
        for objective in ("entropy", "superfluous"):
            full = infer_task(
                learned.method, x, procedure="exhaustive", objective=objective, num_classes=10
            )[0]
            everything = infer_task(
                learned.method,
                x,
                procedure="shortlist",
                objective=objective,
                num_classes=10,
                shortlist_size=5,
            )[0]
            assert everything == full == t
            values = verify(learned.method, x, [0, 1, 2, 3, 4], objective, 10)
            assert int(values.argmin()) == full


def _random_method(kind: str, num_tasks: int):
    model = build_backbone(BackboneConfig(num_outputs=50), (1, 28, 28), 10)
    gen = torch.Generator().manual_seed(0)
    banks = num_tasks if kind == "supsup" else 4
    for _ in range(banks):
        for layer in masked_layers(model):
            layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    if kind == "supsup":
        method = SupSup(model, SupSupConfig())
        method.restore_state({}, {"task_ids": list(range(num_tasks))})
        return method
    method = ImpressLearn(model, ImpressLearnConfig(num_impressions=4, impression_kind="random"))
    tensors = {
        f"alpha.{t}.{i}": torch.rand(4, generator=gen) for t in range(num_tasks) for i in range(3)
    }
    method.restore_state(
        tensors,
        {
            "tasks": list(range(num_tasks)),
            "dedicated_accuracy": {},
            "single_impression_accuracy": {},
        },
    )
    return method


@pytest.mark.parametrize("kind", ["supsup", "impresslearn"])
def test_the_cost_of_a_shortlist_call_does_not_grow_with_the_number_of_tasks(kind):
    """Forward passes counted, not seconds: one ranking pass plus k verifications, for 10 tasks as
    for 200; exhaustive verification grows with T."""
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    counts = {}
    for num_tasks in (10, 200):
        method = _random_method(kind, num_tasks)
        calls = []
        method.model.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        for procedure in ("shortlist", "exhaustive"):
            calls.clear()
            infer_task(
                method,
                x,
                procedure=procedure,
                objective="superfluous",
                num_classes=10,
                shortlist_size=5,
            )
            counts[procedure, num_tasks] = len(calls)
    assert counts["shortlist", 10] == counts["shortlist", 200] == 1 + 5
    assert counts["exhaustive", 10] == 10 and counts["exhaustive", 200] == 200


def test_binary_shortlist_spans_binary_search_and_exhaustive_verification(learned):
    """Halving stopped at k candidates, then verifying them: k = 1 is binary search, k >= T is
    exhaustive verification, and the true task is found on well-separated tasks."""
    for t in range(5):
        x = learned.scenario.test_data(t).inputs(slice(0, 16))

        def infer(procedure, size=5, x=x):
            return infer_task(
                learned.method,
                x,
                procedure=procedure,
                objective="entropy",
                num_classes=10,
                shortlist_size=size,
            )

        assert infer("binary_shortlist", size=5) == (infer("exhaustive")[0], 0)
        assert infer("binary_shortlist", size=1) == infer("binary")
        assert infer("binary_shortlist", size=2)[0] == t


def test_binary_shortlist_costs_log_t_rounds_plus_k_forwards():
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    # 10 -> 5 candidates in 1 round; 200 -> 100 -> 50 -> 25 -> 13 -> 7 -> 4 in 6 rounds
    for num_tasks, rounds, listed in ((10, 1, 5), (200, 6, 4)):
        method = _random_method("impresslearn", num_tasks)
        calls = []
        method.model.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        _, used = infer_task(
            method,
            x,
            procedure="binary_shortlist",
            objective="superfluous",
            num_classes=10,
            shortlist_size=5,
        )
        assert used == rounds
        assert len(calls) == rounds + listed  # one pass per round, one per candidate

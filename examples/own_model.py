"""impresslearn on your own model and tensors: masked layers, SupSup masks, ImpressLearn
alphas and task inference, with the library's methods and no presets or run folders.

    python examples/own_model.py              # about half a minute on 2 CPU cores
    python examples/own_model.py --steps 40   # quicker and less accurate (the test suite's run)

The tensors are the package's embedded MNIST digits (real data, shipped with it); task ``t``
shuffles the pixels with its own fixed permutation (task 0 keeps them). Any float inputs with int64
labels would do. The model is an ordinary ``nn.Module`` whose layers are ``MaskedLinear`` (or
``MaskedConv2d``): their weights are frozen random values drawn from a seed, and a method only
chooses which weights to keep.

SupSup learns one mask per task and infers a test batch's task without being told. ImpressLearn
then reuses SupSup's masks of tasks 0-2 as its impressions and learns task 3 as a combination of
them (3 numbers per output unit of every layer), compared with SupSup's own mask for task 3 and
with one impression applied unchanged.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import impresslearn as il

NUM_TASKS = 4
IMPRESSION_TASKS = (0, 1, 2)  # ImpressLearn's impressions: SupSup's masks of these tasks
NEW_TASK = 3  # learned by ImpressLearn as a combination of the impressions


class SmallNet(nn.Module):
    """Your own network: masked linear layers (``il.MaskedConv2d`` works the same way for
    convolutions). Two instances with the same ``seed`` have the same frozen weights."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.hidden = il.MaskedLinear(28 * 28, 200, backbone_seed=seed, layer_index=0)
        self.out = il.MaskedLinear(200, 10, backbone_seed=seed, layer_index=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(x.flatten(1))))


Split = tuple[Tensor, Tensor]  # float inputs (N, 1, 28, 28), int64 labels (N,)


def make_tasks(train_size: int, test_size: int) -> list[dict[str, Split]]:
    """Per task, ``{"train": (x, y), "test": (x, y)}``."""
    data = il.load_dataset("mnist_embedded", None)  # 8,000 train / 2,000 test real digits
    splits = {
        "train": (data.train.images[:train_size], data.train.labels[:train_size]),
        "test": (data.test.images[:test_size], data.test.labels[:test_size]),
    }
    tasks = []
    for t in range(NUM_TASKS):
        order = torch.randperm(784, generator=torch.Generator().manual_seed(t))
        order = torch.arange(784) if t == 0 else order
        task = {}
        for name, (images, labels) in splits.items():
            x = (images.float() / 255.0 - 0.1307) / 0.3081
            task[name] = (x.flatten(1)[:, order].view(-1, 1, 28, 28), labels)
        tasks.append(task)
    return tasks


def learn(method: il.Method, task: int, data: Split, steps: int, lr: float) -> None:
    """Learn ``task`` with any method: what it trains (SupSup: scores, ImpressLearn: alphas) comes
    from ``trainable_parameters``; once ``end_task`` returns, the task never changes again."""
    x, y = data
    method.begin_task(task)
    params = method.trainable_parameters()  # empty when there is nothing to learn
    if params:
        optimizer = torch.optim.Adam(params, lr=lr)
        gen = torch.Generator().manual_seed(task)
        for _ in range(steps):
            rows = torch.randint(len(y), (128,), generator=gen)
            with method.training_context():
                loss = F.cross_entropy(method.model(x[rows]), y[rows])
            extra = method.loss_regulariser()  # ImpressLearn's (||alpha||_1 - 1)^2 term
            if extra is not None:
                loss = loss + extra
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    method.end_task(task)


@torch.no_grad()
def accuracy(method: il.Method, task: int, data: Split) -> float:
    x, y = data
    with method.task_context(task):  # selects the task's mask (or combination)
        return float((method.model(x).argmax(1) == y).float().mean())


def inferred(method: il.Method, task: int, data: Split, batch: int = 100) -> float:
    """Fraction of test batches whose task is inferred right, without the task id: SupSup's
    binary search on the output entropy over the superposed tasks."""
    x, _ = data
    batches = range(0, len(x) - batch + 1, batch)
    right = sum(
        il.infer_task(method, x[i : i + batch], procedure="binary", num_classes=10)[0] == task
        for i in batches
    )
    return right / len(batches)


def main(steps: int = 300, train_size: int = 8000, test_size: int = 2000) -> dict[str, object]:
    tasks = make_tasks(train_size, test_size)
    r: dict[str, object] = {}

    # SupSup: one supermask per task over the frozen weights.
    supsup = il.SupSup(SmallNet(seed=0), il.SupSupConfig(density=0.5))
    first = []
    for t, task in enumerate(tasks):
        learn(supsup, t, task["train"], steps, lr=1e-3)
        first.append(accuracy(supsup, t, task["test"]))
    r["supsup"] = [accuracy(supsup, t, task["test"]) for t, task in enumerate(tasks)]
    assert r["supsup"] == first, "nothing is forgotten"
    r["supsup_inferred"] = [inferred(supsup, t, task["test"]) for t, task in enumerate(tasks)]

    # ImpressLearn over the same frozen weights: the impressions are SupSup's masks (read from
    # every layer's bank), stored once; the impression tasks use them as they are (nothing to
    # learn), the new task learns its alphas.
    impressions = [
        [layer.bank[supsup.task_ids.index(t)].clone() for layer in il.masked_layers(supsup.model)]
        for t in IMPRESSION_TASKS
    ]
    config = il.ImpressLearnConfig(
        num_impressions=len(IMPRESSION_TASKS),
        impression_tasks=IMPRESSION_TASKS,
        granularity="output_unit",
    )
    impress = il.ImpressLearn(SmallNet(seed=0), config)
    impress.prepare_with(impressions)
    for t, task in enumerate(tasks):
        learn(impress, t, task["train"], steps, lr=1e-2)
    r["impresslearn"] = [accuracy(impress, t, task["test"]) for t, task in enumerate(tasks)]
    r["impresslearn_inferred"] = [
        inferred(impress, t, task["test"]) for t, task in enumerate(tasks)
    ]
    x, y = tasks[NEW_TASK]["test"]
    with torch.no_grad(), il.use_coeffs(impress.model, il.one_hot(0, impress.n)):
        r["one_impression"] = float((impress.model(x).argmax(1) == y).float().mean())
    r["bytes_per_task"] = {
        "supsup": supsup.bytes_per_task()["mask"],
        "impresslearn": impress.bytes_per_task()["coeffs"],
    }

    def row(values: list[float]) -> str:
        return " ".join(f"{100 * v:7.2f}%" for v in values)

    print(f"{'task':<34}" + "".join(f"{t:>9}" for t in range(NUM_TASKS)))
    print(f"{'SupSup: accuracy':<34}{row(r['supsup'])}")
    print(f"{'  task inferred right':<34}{row(r['supsup_inferred'])}")
    print(f"{'ImpressLearn: accuracy':<34}{row(r['impresslearn'])}")
    print(f"{'  task inferred right':<34}{row(r['impresslearn_inferred'])}")
    combined, own, single = r["impresslearn"][NEW_TASK], r["supsup"][NEW_TASK], r["one_impression"]
    print(
        f"task {NEW_TASK}: combination {100 * combined:.2f}%, SupSup's own mask {100 * own:.2f}%, "
        f"impression 0 unchanged {100 * single:.2f}%"
    )
    print(
        f"bytes per task: SupSup mask {r['bytes_per_task']['supsup']:,}, "
        f"ImpressLearn alphas {r['bytes_per_task']['impresslearn']:,}"
    )
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per task")
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--test-size", type=int, default=2000)
    args = parser.parse_args()
    main(args.steps, args.train_size, args.test_size)

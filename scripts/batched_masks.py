"""Would training K masks of one task in one batched pass make homogeneous impressions cheaper?

Homogeneous impressions are K SupSup masks of the same task that differ only in their initial
scores, trained on the same batches. This measures one training step (forward, backward, top-k
straight-through masks at density 0.5) of K masks of LeNet-300-100 on a batch of 128, done one
mask after another against all K in one batched pass (``torch.bmm`` over the stacked masked
weights), side by side in one process, medians over repeats with the order alternated.

    OMP_NUM_THREADS=1 python scripts/batched_masks.py --masks 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

DIMS = [(784, 300), (300, 100), (100, 10)]


def straight_through(scores: torch.Tensor) -> torch.Tensor:
    """Top-half masks of each of the stacked ``(K, out, in)`` scores by |score|, with the
    straight-through gradient."""
    flat = scores.detach().abs().flatten(1)
    keep = flat.shape[1] // 2
    threshold = flat.kthvalue(flat.shape[1] - keep, dim=1).values
    mask = (scores.detach().abs() > threshold.view(-1, 1, 1)).float()
    return mask + scores - scores.detach()


def one_by_one(weights, scores, x, y) -> None:
    for k in range(scores[0].shape[0]):
        h = x
        for i, (w, s) in enumerate(zip(weights, scores, strict=True)):
            h = h @ (w * straight_through(s[k : k + 1])[0]).T
            h = h.relu() if i < len(weights) - 1 else h
        F.cross_entropy(h, y).backward()


def batched(weights, scores, x, y) -> None:
    k = scores[0].shape[0]
    h = x.expand(k, *x.shape)
    for i, (w, s) in enumerate(zip(weights, scores, strict=True)):
        h = torch.bmm(h, (w * straight_through(s)).transpose(1, 2))
        h = h.relu() if i < len(weights) - 1 else h
    loss = F.cross_entropy(h.reshape(-1, h.shape[-1]), y.repeat(k), reduction="sum") / len(y)
    loss.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=gen) for i, o in DIMS]
    scores = [torch.randn(args.masks, o, i, generator=gen, requires_grad=True) for i, o in DIMS]
    x = torch.randn(args.batch, 784, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    times: dict[str, list[float]] = {"one by one": [], "batched": []}
    for repeat in range(args.repeats):
        order = [one_by_one, batched] if repeat % 2 == 0 else [batched, one_by_one]
        for step in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(weights, scores, x, y)
            name = "one by one" if step is one_by_one else "batched"
            times[name].append((time.perf_counter() - start) / args.steps)
    slow, fast = (statistics.median(times[n]) for n in ("one by one", "batched"))
    print(f"{args.masks} masks, batch {args.batch}, {torch.get_num_threads()} thread(s):")
    print(f"  one by one {1e3 * slow:.1f} ms per step, batched {1e3 * fast:.1f} ms")
    print(f"  batched is {slow / fast:.2f}x as fast (median of {args.repeats} repeats)")


if __name__ == "__main__":
    main()

"""Derived seeds: every random source in impresslearn is an explicit seed or ``torch.Generator``.

Library code never touches the global RNGs. A seed for a sub-purpose (a layer's weights, a task's
permutation, a batch order) is derived from a base seed and a few integers with NumPy's
``SeedSequence``, which mixes them well, so ``(seed, 1, 2)`` and ``(seed, 2, 1)`` are unrelated.
"""

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """Mix integers (a base seed, then sub-purpose ids) into one 63-bit seed."""
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*keys)``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


# Sub-purpose ids, so that seeds derived for different things never coincide.
PURPOSE_WEIGHTS = 1
PURPOSE_SCORES = 2
PURPOSE_TASK = 3
PURPOSE_BATCHES = 4
PURPOSE_RANDOM_MASK = 5
PURPOSE_EVAL_SAMPLE = 6
PURPOSE_INFERENCE_SAMPLE = 7
PURPOSE_SUBSET = 8

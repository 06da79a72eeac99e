"""WSN: weights trained beside the masks, every weight a stored mask selects bit-identical from
the end of its task on (and the test that shows the invariant needs the gradient masking), zero
forgetting, checkpoints that reload and resume exactly, task inference over its masks."""

import numpy as np
import pytest
import torch

from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.layers import masked_layers
from impresslearn.methods.wsn import WSN
from impresslearn.runners import load_run, run_experiment
from impresslearn.runners.stream import build_stream
from impresslearn.runtime import Runtime

WSN_RUN = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=4",
    "method.name=wsn",
    "method.capacity=0.3",
    "backbone.weight_init=kaiming_normal",
    "train.optimizer=adam",
    "train.lr=1e-3",
    "train.iterations=60",
]


def _stream_weights(overrides):
    """Learn the stream task by task; the layers' weights after each task, and the accuracies
    of every task after every task."""
    config = apply_overrides(ExperimentConfig(), overrides)
    stream = build_stream(config, None, Runtime())
    weights, accuracies = [], []
    for t in range(stream.num_tasks):
        stream.learn_task(t, config.train, f"task {t}")
        weights.append([layer.weight.clone() for layer in masked_layers(stream.model)])
        row = []
        for j in range(t + 1):
            with stream.method.task_context(j):
                row.append(stream.accuracy(stream.scenario.test_data(j)))
        accuracies.append(row)
    return stream, weights, accuracies


def _violations(stream, weights) -> int:
    """Weights a stored mask selects that changed after the end of the mask's task."""
    count = 0
    layers = masked_layers(stream.model)
    for t in range(1, len(weights)):
        for li, layer in enumerate(layers):
            selected = layer.bank[:t].any(0)  # the masks of tasks 0..t-1
            count += int((weights[t][li] != weights[t - 1][li])[selected].sum())
    return count


def test_selected_weights_never_change_and_nothing_is_forgotten():
    stream, weights, accuracies = _stream_weights(WSN_RUN)
    assert _violations(stream, weights) == 0
    # the weights are trained: each task changed weights no earlier mask selected
    for t in range(1, len(weights)):
        assert any(not torch.equal(a, b) for a, b in zip(weights[t], weights[t - 1], strict=True))
    for t in range(len(accuracies)):  # bit-identical accuracy of every task after every task
        assert all(accuracies[t][j] == accuracies[j][j] for j in range(t + 1))
    capacity = stream.method.capacity_used()
    assert len(capacity) == 4 and capacity == sorted(capacity) and 0.3 <= capacity[0] < capacity[-1]


def test_the_invariant_needs_the_gradient_masking(monkeypatch):
    """Without the hook that zeroes the gradient of selected weights, the same test fails."""
    monkeypatch.setattr(WSN, "_free_gradients", lambda self, layer: lambda grad: grad)
    stream, weights, accuracies = _stream_weights(WSN_RUN)
    assert _violations(stream, weights) > 0
    assert any(accuracies[-1][j] != accuracies[j][j] for j in range(len(accuracies) - 1))


def test_a_saved_run_reloads_and_resumes_exactly(tmp_path):
    config = apply_overrides(ExperimentConfig(), WSN_RUN)
    full = run_experiment(config, None, tmp_path / "full")
    assert full.metrics["forgetting"] == 0.0
    assert len(full.metrics["capacity_used"]) == 4
    assert full.metrics["bytes_per_task"]["weights"] > 0
    short = apply_overrides(config, ["scenario.num_tasks=2"])
    run_experiment(short, None, tmp_path / "resumed")
    resumed = run_experiment(config, None, tmp_path / "resumed", resume=True)
    assert resumed.accuracies.entries()[2].tolist() == full.accuracies.entries()[2].tolist()
    loaded, again = load_run(tmp_path / "full"), load_run(tmp_path / "resumed")
    x = full.scenario.test_data(3).inputs(slice(0, 64))
    for t in range(4):
        with torch.no_grad(), full.method.task_context(t):
            trained = full.method.model(x)
        assert torch.equal(loaded.logits(x, t), trained)  # reloaded: the trained weights too
        assert torch.equal(again.logits(x, t), trained)  # resumed after task 2


def test_weight_decay_is_refused():
    with pytest.raises(ConfigError, match="train.weight_decay=0.1 would change the weights"):
        apply_overrides(ExperimentConfig(), [*WSN_RUN, "train.weight_decay=0.1"])


def test_tasks_are_inferred_over_its_masks():
    config = apply_overrides(
        ExperimentConfig(),
        [*WSN_RUN, "scenario.num_tasks=3", "eval.scenario=GNu", "inference.test_images=200"],
    )
    result = run_experiment(config, None)
    assert result.metrics["task_inference_accuracy"] >= 0.9


def test_huffman_bits_of_the_mask_patterns_by_hand():
    from impresslearn.methods.wsn import huffman_bits

    # 9 weights, 2 masks; patterns 00 x5, 01 x2, 10 x1, 11 x1. Huffman code lengths 1, 2, 3, 3:
    # 5*1 + 2*2 + 1*3 + 1*3 = 15 bits, plus the table: 4 patterns * (2 bits + 8-bit length).
    first = [0, 0, 0, 0, 0, 0, 0, 1, 1]
    second = [0, 0, 0, 0, 0, 1, 1, 0, 1]
    bank = np.array([first, second], dtype=bool)
    assert huffman_bits(bank) == 15 + 4 * 10
    assert huffman_bits(np.zeros((3, 7), dtype=bool)) == 7 + 1 * 11  # one pattern

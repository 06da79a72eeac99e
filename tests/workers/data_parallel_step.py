"""Worker of tests/test_distributed.py, launched by torchrun: one data-parallel backward pass.

Every process builds the same LeNet-300-100 with fresh SupSup scores, takes the same global batch
of the first ``size`` training images of task 0 (mnist_embedded), computes the data-parallel
gradient (impresslearn.train.backward), then one optimiser step, and saves its share of the
batch, the gradients and the new scores to OUT/rank-R.pt.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.data import load_dataset
from impresslearn.methods import SupSup, SupSupConfig
from impresslearn.runtime import Runtime
from impresslearn.scenarios import ScenarioConfig, build_scenario
from impresslearn.train import backward


def run(size: int, runtime: Runtime | None) -> dict:
    data = load_dataset("mnist_embedded", None)
    scenario = build_scenario(ScenarioConfig(dataset="mnist_embedded", num_tasks=1), data)
    task = scenario.train_data(0)
    x, y = task.inputs(slice(0, size)), task.y[:size]
    model = build_backbone(BackboneConfig(), scenario.input_shape, 10)
    method = SupSup(model, SupSupConfig())
    method.begin_task(0)
    params = method.trainable_parameters()
    backward(params, lambda a, b: F.cross_entropy(model(a), b), x, y, runtime)
    grads = [p.grad.clone() for p in params]
    torch.optim.RMSprop(params, lr=1e-2).step()
    share = runtime.rows(size) if runtime is not None else slice(0, size)
    rows = [share.start, share.stop]
    return {"grads": grads, "scores": [p.detach().clone() for p in params], "rows": rows}


if __name__ == "__main__":
    out, sizes = Path(sys.argv[1]), [int(s) for s in sys.argv[2:]]
    dist.init_process_group("gloo")
    runtime = Runtime.create("cpu")
    torch.save({size: run(size, runtime) for size in sizes}, out / f"rank-{runtime.rank}.pt")
    dist.destroy_process_group()

"""Devices and precision: resolution, clear errors, state that moves, runs that resume anywhere."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.inference import oneshot_gradient
from impresslearn.layers import norm_stats
from impresslearn.methods import ImpressLearn, ImpressLearnConfig, SupSup, SupSupConfig
from impresslearn.runners import load_run, run_experiment
from impresslearn.runtime import Runtime, resolve_device

TINY = ["scenario.dataset=mnist_embedded", "scenario.num_tasks=3", "train.iterations=30"]
HAS_CUDA = torch.cuda.is_available()
# The accelerator the device tests use: $IMPRESSLEARN_TEST_DEVICE (scripts/gpu_check.sh sets it),
# else CUDA when present; without one they are skipped.
ACCELERATOR = os.environ.get("IMPRESSLEARN_TEST_DEVICE") or ("cuda" if HAS_CUDA else "cpu")
needs_accelerator = pytest.mark.skipif(ACCELERATOR == "cpu", reason="no GPU on this machine")


def test_auto_is_cuda_when_available_else_cpu():
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_is_a_clear_error(name):
    with pytest.raises(ConfigError, match="not available.*--device cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu0", ""])
def test_unknown_device_names_the_choices(name):
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision"):
        Runtime.create("cpu", "fp16")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cli_device_cuda_without_gpu_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "quickstart", "--device", "cuda", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cuda" in err and "Traceback" not in err
    assert not out.exists()


def _tensors(obj, seen=None, path="root"):
    """Every tensor reachable from ``obj`` through attributes, dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, seen, f"{path}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, seen, f"{path}[{i}]")
    elif type(obj).__module__.startswith(("impresslearn", "torch.nn")) and hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            yield from _tensors(v, seen, f"{path}.{k}")


def _train_a_little(method, x, y, tasks):
    for t in tasks:
        method.begin_task(t)
        params = method.trainable_parameters()
        if params:
            optimizer = torch.optim.SGD(params, lr=0.1)
            with method.training_context():
                for _ in range(2):
                    optimizer.zero_grad()
                    F.cross_entropy(method.model(x), y).backward()
                    optimizer.step()
        method.end_task(t)


@pytest.mark.parametrize("kind", ["supsup", "impresslearn"])
def test_nothing_stays_on_the_cpu_when_a_method_moves(kind):
    """The meta device has no storage: any tensor reachable from the model or the method that is
    still on the CPU after ``method.to('meta')`` is state that a GPU run would leave behind."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (8,), generator=gen)
    model = build_backbone(BackboneConfig(name="gem_resnet18"), (3, 8, 8), 4)
    if kind == "supsup":
        method = SupSup(model, SupSupConfig(density=0.5))
    else:
        method = ImpressLearn(
            model, ImpressLearnConfig(num_impressions=2, impression_kind="random", density=0.5)
        )
        method.prepare(None, 3)  # random impressions need no trainer
    _train_a_little(method, x, y, range(3))
    with torch.no_grad(), method.task_context(1):
        method.model(x)  # caches the effective weights
    oneshot_gradient(method, x, "entropy", 4)  # caches the mixture of a large bank, if any
    if kind == "impresslearn":
        method.begin_task(3)  # alphas being learned
        method.mixed_coeffs(torch.full((3,), 1 / 3))  # the stacked alphas
    found = list(_tensors(method))
    assert any("stats" in p for p, _ in found) and len(found) > 20
    method.to("meta")
    left = [p for p, t in _tensors(method) if t.device.type == "cpu"]
    assert not left, f"left on the CPU: {left}"


def test_a_run_names_its_device_and_resumes_on_another(tmp_path):
    """Started on 'cpu', stopped after the preparation, resumed with 'auto': the identical matrix
    (the device is not compared on resume)."""
    config = apply_overrides(ExperimentConfig(), TINY)
    reference = run_experiment(config, None, tmp_path / "ref", device="cpu")
    metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["device_name"] == "cpu"
    assert metrics["torch_version"] == torch.__version__ and metrics["precision"] == "fp32"
    assert isinstance(metrics["native_topk"], bool) and "native_scan" in metrics

    short = apply_overrides(config, ["scenario.num_tasks=1"])
    run_experiment(short, None, tmp_path / "run", device="cpu")
    resumed = run_experiment(config, None, tmp_path / "run", resume=True, device="auto")
    np.testing.assert_array_equal(resumed.accuracy_matrix, reference.accuracy_matrix)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["device"] == str(
        resolve_device("auto")
    )


def test_bf16_autocast_keeps_trainable_state_float32():
    """bf16 changes the forward's matmuls only: scores, their gradients, and the per-task
    statistics stay float32 (the CPU supports bfloat16 autocast too, so this runs here)."""
    runtime = Runtime.create("cpu", "bf16")
    model = build_backbone(BackboneConfig(name="gem_resnet18"), (3, 8, 8), 4)
    method = SupSup(model, SupSupConfig(density=0.5))
    method.begin_task(0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    with method.training_context(), runtime.autocast():
        logits = model(x)
        assert logits.dtype == torch.bfloat16
        F.cross_entropy(logits.float(), y).backward()
    params = method.trainable_parameters()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params)
    method.end_task(0)
    with norm_stats(model, 0):
        pass
    norms = [m for m in model.modules() if hasattr(m, "running_mean")]
    assert all(n.running_mean.dtype == torch.float32 for n in norms)


def test_bf16_on_the_cpu_is_honoured_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="impresslearn.runtime"):
        runtime = Runtime.create("cpu", "bf16")
    assert runtime.precision == "bf16" and "meant for CUDA" in caplog.text


def test_bf16_run_on_cpu_learns(tmp_path):
    config = apply_overrides(
        ExperimentConfig(), [*TINY, "scenario.num_tasks=1", "train.iterations=60"]
    )
    result = run_experiment(config, None, precision="bf16", device="cpu")
    assert result.metrics["precision"] == "bf16"
    assert result.accuracy_matrix[0, 0] > 0.5  # far above chance (10%)


@needs_accelerator
def test_a_stream_on_the_accelerator_matches_the_cpu_and_reloads_there(tmp_path):
    """Same batches, same initial scores, same masks up to float summation order: the accuracy
    matrices agree within a point, forgetting is exactly 0, and the saved run reloads on the CPU
    with outputs equal to the accelerator's up to float tolerance."""
    config = apply_overrides(ExperimentConfig(), TINY)
    cpu = run_experiment(config, None, device="cpu")
    gpu = run_experiment(config, None, tmp_path / "gpu", device=ACCELERATOR)
    assert gpu.metrics["device"].startswith(ACCELERATOR.split(":")[0])
    assert gpu.metrics["forgetting"] == 0
    np.testing.assert_allclose(gpu.accuracy_matrix, cpu.accuracy_matrix, atol=0.01)
    loaded = load_run(tmp_path / "gpu", device="cpu")
    x = gpu.scenario.test_data(0).prepared()[:200]
    for t in range(3):
        with torch.no_grad(), gpu.method.task_context(t):
            expected = gpu.method.model(x).cpu()
        torch.testing.assert_close(loaded.logits(x.cpu(), t), expected, rtol=1e-4, atol=1e-4)


@needs_accelerator
def test_topk_masks_on_the_accelerator_equal_the_cpus_with_ties():
    from impresslearn.layers import TopKSelector

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(-20, 21, (300, 100), generator=gen).float() / 7  # many exact ties
    k = 15_000
    cpu = TopKSelector(scores.numel(), k)(scores).clone()
    gpu = TopKSelector(scores.numel(), k)(scores.to(ACCELERATOR)).cpu()
    assert int(cpu.sum()) == k and torch.equal(cpu, gpu)

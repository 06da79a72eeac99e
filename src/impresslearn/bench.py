"""Speed benchmarks, measured side by side in one process (ratios, medians over repeats).

Timings on shared machines are noisy, so every benchmark times the contenders interleaved, step
by step, and reports the ratio of medians; absolute times are printed for context only.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    DensityRule,
    freeze_norm_stats,
    masked_layers,
    norm_stats,
    one_hot,
    use_coeffs,
)
from impresslearn.layers.native import kernel_info
from impresslearn.registry import Registry
from impresslearn.seeding import generator

BENCHMARKS: Registry[Callable[..., dict[str, Any]]] = Registry("benchmark")

INPUT_SHAPES = {
    "lenet_300_100": (1, 28, 28),
    "fc_1024_1024": (1, 28, 28),
    "gem_resnet18": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "resnet50": (3, 64, 64),  # SplitImageNet-style images resized to 64x64 (folder:PATH@64)
}
# Mask densities as the presets use them: uniform 0.5 for the MLPs, Erdos-Renyi (scale 128) for
# the residual networks; and the steps timed per turn (a conv step takes ~1 s on one CPU core).
DENSITY = {
    "gem_resnet18": DensityRule("erdos_renyi", 128.0),
    "resnet18": DensityRule("erdos_renyi", 128.0),
    "resnet50": DensityRule("erdos_renyi", 128.0),
}
BLOCK = {"gem_resnet18": 3, "resnet18": 2, "resnet50": 2}
DEFAULT_REPEATS = {"gem_resnet18": 30, "resnet18": 10, "resnet50": 6}


def _no_sync() -> None:
    pass


def _interleaved(
    fns: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    block: int = 25,
    sync: Callable[[], None] = _no_sync,
) -> dict[str, float]:
    times = _interleaved_times(fns, repeats, warmup, block, sync)
    return {k: statistics.median(v) for k, v in times.items()}


def _interleaved_times(
    fns: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    block: int = 25,
    sync: Callable[[], None] = _no_sync,
) -> dict[str, list[float]]:
    """Median seconds per call of each function, timed side by side: the contenders take turns
    in blocks of ``block`` consecutive calls (as a training loop runs one model step after step,
    with its own data warm in the caches) until each has ``repeats`` timed calls. ``sync`` waits
    for a device's queued work: it is called before each clock reading (a GPU runs
    asynchronously)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(v) < repeats for v in times.values()):
        for name, fn in fns.items():
            fn()  # first call of a block: caches still hold the previous contender's data
            for _ in range(min(block, repeats - len(times[name]))):
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def _setup(backbone: str, batch_size: int, device: torch.device | str = "cpu"):
    """Backbone config, input shape, a random batch (drawn on the CPU, moved to ``device``) and
    the generator that drew it."""
    if backbone not in INPUT_SHAPES:
        raise ConfigError(
            f"benchmarks support the backbones {sorted(INPUT_SHAPES)}, got {backbone!r}"
        )
    shape = INPUT_SHAPES[backbone]
    gen = generator(0)
    x = torch.randn(batch_size, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
    return BackboneConfig(name=backbone), shape, x, y, gen


def _begin_scores(model, rule: DensityRule, kind: str) -> list[torch.nn.Parameter]:
    """Fresh seeded scores in every masked layer of ``model`` at the densities of ``rule``."""
    return [
        layer.begin_scores(
            rule.for_shape(tuple(layer.weight.shape)), kind, generator(1, layer.layer_index)
        )
        for layer in masked_layers(model)
    ]


def _train_step(model, optimizer, x, y) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


@BENCHMARKS.register("mask-step")
def bench_mask_step(
    backbone: str = "lenet_300_100",
    repeats: int | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Masked training step (top-k and threshold masks) and known-task evaluation vs dense.

    Residual backbones train with per-task batch norm learning its statistics, against the dense
    network's ordinary non-affine batch norm in training mode; evaluation uses frozen statistics
    against the dense network in eval mode. On a GPU the clock is read after synchronising.
    """
    from impresslearn.runtime import Runtime

    runtime = Runtime.create(device)
    device = runtime.device
    config, shape, x, y, gen = _setup(backbone, batch_size, device)
    repeats = repeats or DEFAULT_REPEATS.get(backbone, 1000)
    block = BLOCK.get(backbone, 25)
    rule = DENSITY.get(backbone, DensityRule("uniform", 0.5))

    dense = build_backbone(config, shape, 10, dense=True).to(device)
    contenders = {
        "dense": _train_step(dense, torch.optim.RMSprop(dense.parameters(), lr=1e-4), x, y)
    }
    masked = {}
    for kind in ("topk", "threshold"):
        model = build_backbone(config, shape, 10).to(device)
        scores = _begin_scores(model, rule, kind)
        contenders[kind] = _train_step(model, torch.optim.RMSprop(scores, lr=1e-4), x, y)
        masked[kind] = model
    warmup = max(2, min(20, repeats // 20))
    # As a task is learned (runners.stream): per-task batch norm learns its statistics in one
    # block around all the steps.
    with ExitStack() as learning:
        for model in masked.values():
            learning.enter_context(norm_stats(model, 0, learn=True))
        step = _interleaved(contenders, repeats, warmup, block=block, sync=runtime.synchronize)

    # Evaluation with a known task: the effective weight is cached inside use_coeffs.
    model = masked["topk"]
    with norm_stats(model, 0, learn=True), torch.no_grad():
        model(x)
    freeze_norm_stats(model, 0)
    for layer in masked_layers(model):
        layer.add_to_bank(layer.end_scores())
    dense.eval()
    x_eval = torch.randn(1000 if block == 25 else 250, *shape, generator=gen).to(device)
    with torch.no_grad(), use_coeffs(model, one_hot(0, 1, device)), norm_stats(model, 0):
        evaluation = _interleaved(
            {"dense": lambda: dense(x_eval), "masked": lambda: model(x_eval)},
            max(50, repeats // 5) if block == 25 else repeats,
            warmup=2,
            block=block,
            sync=runtime.synchronize,
        )
    return {
        "benchmark": "mask-step",
        "backbone": backbone,
        "device": str(device),
        "device_name": runtime.device_name(),
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        **kernel_info(),
        "ratio": step["topk"] / step["dense"],
        "threshold_ratio": step["threshold"] / step["dense"],
        "eval_ratio": evaluation["masked"] / evaluation["dense"],
        "median_ms": {
            "dense_step": 1e3 * step["dense"],
            "topk_step": 1e3 * step["topk"],
            "threshold_step": 1e3 * step["threshold"],
            f"dense_eval_{len(x_eval)}": 1e3 * evaluation["dense"],
            f"masked_eval_{len(x_eval)}": 1e3 * evaluation["masked"],
        },
        "targets": {"ratio": 1.3, "eval_ratio": 1.1},
    }


@BENCHMARKS.register("data-pipeline")
def bench_data_pipeline(
    backbone: str | None = None,
    repeats: int | None = None,
    batch_size: int | None = None,
    data_root: Path | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Training batches made vs consumed by the masked model's step (CIFAR-100, or --dataset).

    Without ``dataset``: SplitCIFAR100 batches held in memory (gather + random crop + flip, real
    CIFAR-100 from ``--data-root``) against a GEMResNet18 step. ``ratio`` = time to produce a
    batch / time the masked training step takes to consume it: below 1 the data never starves
    the model (loading is done in the same thread, so it adds this fraction to every step).

    With ``dataset="folder:PATH@SIZE"``: the tree streamed from its files (decoded, random resized
    crop and flip) with 0, 1 and 2 DataLoader workers, in images per second, against the images
    per second a masked ResNet-50 step (default) consumes at that size on this machine.
    """
    if dataset is not None:
        return _streamed_pipeline(
            dataset, backbone or "resnet50", repeats or 3, batch_size or 32, data_root
        )
    backbone, repeats, batch_size = backbone or "gem_resnet18", repeats or 20, batch_size or 128
    from impresslearn.data import load_dataset
    from impresslearn.scenarios import ScenarioConfig, build_scenario
    from impresslearn.train import iterate_batches

    if backbone not in DENSITY:
        raise ConfigError(f"data-pipeline times a residual backbone ({sorted(DENSITY)})")
    scenario = build_scenario(
        ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20),
        load_dataset("cifar100", data_root),
    )
    data = scenario.train_data(0)
    batches = iterate_batches(data, batch_size, 10**9, generator(0))
    pipeline = _interleaved_times({"batch": lambda: next(batches)}, 200, warmup=5)["batch"]
    model = build_backbone(BackboneConfig(name=backbone), scenario.input_shape, 5)
    rule = DENSITY[backbone]
    scores = [
        layer.begin_scores(rule.for_shape(tuple(layer.weight.shape)), "topk", generator(1, i))
        for i, layer in enumerate(masked_layers(model))
    ]
    x, y = next(batches)
    step = _train_step(model, torch.optim.Adam(scores, lr=1e-3), x, y)
    with norm_stats(model, 0, learn=True):
        model_times = _interleaved_times({"step": step}, repeats, warmup=2, block=BLOCK[backbone])
    batch_s, step_s = statistics.median(pipeline), statistics.median(model_times["step"])
    return {
        "benchmark": "data-pipeline",
        "backbone": backbone,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "ratio": batch_s / step_s,
        "images_per_s": {"pipeline": batch_size / batch_s, "model": batch_size / step_s},
        "median_ms": {"batch": 1e3 * batch_s, "masked_step": 1e3 * step_s},
        "targets": {"ratio": 1.0},
    }


def _streamed_pipeline(
    dataset: str, backbone: str, repeats: int, batch_size: int, data_root: Path | None
) -> dict[str, Any]:
    from impresslearn.data import load_dataset
    from impresslearn.data.streaming import StreamedImageData

    if backbone not in DENSITY:
        raise ConfigError(f"data-pipeline times a residual backbone ({sorted(DENSITY)})")
    data = load_dataset(dataset, data_root, loading="stream")
    if not isinstance(data, StreamedImageData):
        raise ConfigError(f"--dataset must be an image folder, folder:PATH@SIZE, got {dataset!r}")
    indices, labels = torch.arange(len(data.train)), data.train.labels
    batches = max(4, 512 // batch_size)  # timed batches per worker count, after the first
    rates = {}
    for workers in (0, 1, 2):
        source = data.with_workers(workers).source("train", augment=True)
        times = []
        for r in range(repeats):
            gen = generator(r)
            loader = source.train_batches(indices, labels, batch_size, batches + 1, gen)
            next(loader)  # worker start-up and the task's file check, once per task in a run
            start = time.perf_counter()
            for _ in loader:
                pass
            times.append((time.perf_counter() - start) / batches)
        rates[f"{workers}_workers"] = batch_size / statistics.median(times)
    size = data.image_size
    model = build_backbone(BackboneConfig(name=backbone), (3, size, size), 10)
    rule = DENSITY[backbone]
    scores = [
        layer.begin_scores(rule.for_shape(tuple(layer.weight.shape)), "topk", generator(1, i))
        for i, layer in enumerate(masked_layers(model))
    ]
    gen = generator(0)
    x = torch.randn(batch_size, 3, size, size, generator=gen)  # the step's cost, not its data
    y = torch.randint(0, 10, (batch_size,), generator=gen)
    step = _train_step(model, torch.optim.Adam(scores, lr=1e-3), x, y)
    with norm_stats(model, 0, learn=True):
        model_times = _interleaved_times({"step": step}, repeats, warmup=1, block=1)
    consumed = batch_size / statistics.median(model_times["step"])
    return {
        "benchmark": "data-pipeline",
        "dataset": dataset,
        "backbone": backbone,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "images_per_s": {**rates, f"masked_{backbone}_step": consumed},
        "ratios": {k: consumed / v for k, v in rates.items()},
    }


def format_table(result: dict[str, Any]) -> str:
    """A readable table of a benchmark result."""
    lines = [
        f"benchmark {result['benchmark']} ({result.get('backbone', '')}, "
        f"{result.get('threads', '?')} threads, medians of {result.get('repeats', '?')})"
    ]
    if "native_topk" in result:
        kernel = f"compiled, {result['native_scan']} scan" if result["native_topk"] else "NumPy"
        lines.append(f"  top-k selection: {kernel}")
    for key, value in result.get("median_ms", {}).items():
        lines.append(f"  {key:<20} {value:8.3f} ms")
    for key, value in result.get("peak_memory_mb", {}).items():
        lines.append(f"  peak {key:<15} {value:8.0f} MiB")
    for key, value in result.get("images_per_s", {}).items():
        lines.append(f"  images/s {key:<11} {value:8.0f}")
    for key, value in result.get("ratios", {}).items():
        lines.append(f"  ratio {key:<14} {value:8.3f}x")
    for name, method in result.get("methods", {}).items():  # bench stream
        lines.append(f"  {name}: at task  overhead ms  bookkeeping ms  bytes written  RSS MiB")
        for mark, row in method["at_task"].items():
            lines.append(
                f"  {'':<{len(name)}}  {mark:>7}  {1e3 * row['overhead']:11.2f}  "
                f"{1e3 * row['bookkeeping']:14.2f}  {row['bytes']:13.0f}  {row['rss_mb']:7.0f}"
            )
        lines.append(
            f"  {'':<{len(name)}}  ratio {method['ratio']:.3f}x, bookkeeping "
            f"{method['bookkeeping_ratio']:.3f}x, bytes {method['bytes_ratio']:.3f}x"
        )
    for key in ("ratio", "shortlist_ratio", "ratio_vs_threads", "threshold_ratio", "eval_ratio"):
        if key in result:
            target = result.get("targets", {}).get(key)
            suffix = f"   (target <= {target})" if target else ""
            lines.append(f"  {key:<20} {result[key]:8.3f}x{suffix}")
    return "\n".join(lines)


@BENCHMARKS.register("alpha-step")
def bench_alpha_step(
    backbone: str = "lenet_300_100", repeats: int = 500, batch_size: int = 128
) -> dict[str, Any]:
    """ImpressLearn alpha training step (n impressions) vs a SupSup top-k mask training step."""
    config, shape, x, y, gen = _setup(backbone, batch_size)

    supsup = build_backbone(config, shape, 10)
    scores = [
        layer.begin_scores(0.5, "topk", generator(1, layer.layer_index))
        for layer in masked_layers(supsup)
    ]
    contenders = {"supsup": _train_step(supsup, torch.optim.RMSprop(scores, lr=1e-4), x, y)}
    sizes = (1, 2, 5, 10, 20)
    for n in sizes:
        model = build_backbone(config, shape, 10)
        layers = masked_layers(model)
        for i in range(n):
            for layer in layers:
                mask = torch.rand(layer.weight.shape, generator=generator(2, i, layer.layer_index))
                layer.add_to_bank(mask < 0.5)
        alphas = [torch.nn.Parameter(torch.full((n,), 1.0 / n)) for _ in layers]
        optimizer = torch.optim.RMSprop(alphas, lr=1e-3)

        def step(model=model, alphas=alphas, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            with use_coeffs(model, alphas):
                loss = F.cross_entropy(model(x), y)
                loss = loss + 0.005 * sum((a.abs().sum() - 1) ** 2 for a in alphas)
            loss.backward()
            optimizer.step()

        contenders[f"alpha_n{n}"] = step
    medians = _interleaved(contenders, repeats, warmup=max(20, repeats // 20))
    ratios = {f"n{n}": medians[f"alpha_n{n}"] / medians["supsup"] for n in sizes}
    return {
        "benchmark": "alpha-step",
        "backbone": backbone,
        "batch_size": batch_size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "ratio": ratios["n10"],
        "ratios": ratios,
        "median_ms": {k: 1e3 * v for k, v in medians.items()},
        "targets": {"ratio": 1.0},
    }


def _inference_setup(method_name: str, num_tasks: int, n: int = 10):
    """A LeNet-300-100 with random stored masks (SupSup: one per task; ImpressLearn: n
    impressions and random alphas per task) and a one-image batch: inference cost does not
    depend on what the masks learned."""
    from impresslearn.methods import ImpressLearn, ImpressLearnConfig, SupSup, SupSupConfig

    model = build_backbone(BackboneConfig(num_outputs=500), (1, 28, 28), 10)
    layers = masked_layers(model)
    masks = num_tasks if method_name == "supsup" else n
    for i in range(masks):
        for layer in layers:
            gen = generator(3, i, layer.layer_index)
            layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    if method_name == "supsup":
        method = SupSup(model, SupSupConfig())
        method.restore_state({}, {"task_ids": list(range(num_tasks))})
    else:
        method = ImpressLearn(
            model, ImpressLearnConfig(num_impressions=n, impression_kind="random")
        )
        gen = generator(4)
        tensors = {
            f"alpha.{t}.{i}": torch.rand(n, generator=gen)
            for t in range(num_tasks)
            for i in range(len(layers))
        }
        meta = {
            "tasks": list(range(num_tasks)),
            "dedicated_accuracy": {},
            "single_impression_accuracy": {},
        }
        method.restore_state(tensors, meta)
    x = torch.randn(1, 1, 28, 28, generator=generator(5))
    return method, x


def _inference_worker(method_name: str, sizes: tuple[int, ...], repeats: int, queue) -> None:
    """Child process: median time per (procedure, T) of one-shot and shortlist inference, and the
    peak RSS (one process per setup, so the peak is that setup's own)."""
    from impresslearn.inference import infer_task
    from impresslearn.runners.stream import peak_memory_mb

    torch.set_num_threads(1)
    setups = {t: _inference_setup(method_name, t) for t in sizes}
    before = peak_memory_mb()

    def call(t: int, procedure: str) -> Callable[[], None]:
        method, x = setups[t]
        references = None
        if procedure.endswith("_calibrated"):  # stored per task: a lookup per candidate
            procedure = procedure.removesuffix("_calibrated")
            references = {task: 0.1 * (task % 7) for task in range(t)}
        return lambda: infer_task(
            method,
            x,
            procedure=procedure,
            objective="superfluous",
            num_classes=10,
            references=references,
        )

    contenders = {(p, t): call(t, p) for p in INFERENCE_PROCEDURES for t in sizes}
    medians = _interleaved(contenders, repeats, warmup=1)
    queue.put({"seconds": medians, "peak_mb": peak_memory_mb(), "setup_peak_mb": before})


INFERENCE_PROCEDURES = ("oneshot", "shortlist", "shortlist_calibrated", "binary_shortlist")


def _in_child(method_name: str, sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_inference_worker, args=(method_name, sizes, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


@BENCHMARKS.register("inference")
def bench_inference(
    backbone: str = "lenet_300_100",
    repeats: int = 5,
    sizes: tuple[int, ...] = (10, 100, 1000, 2500),
) -> dict[str, Any]:
    """Task inference from one image vs the number of tasks T: one-shot, shortlist (one-shot
    ranking, then 5 candidates verified by their own models, raw or calibrated) and binary
    shortlist (binary search stopped at 5 candidates, then verified), SupSup vs ImpressLearn."""
    if backbone != "lenet_300_100":
        raise ConfigError("bench inference runs on lenet_300_100 (SupSup's GNu network)")
    result: dict[str, Any] = {
        "benchmark": "inference",
        "backbone": backbone,
        "repeats": repeats,
        "threads": 1,
        "tasks": list(sizes),
        "median_ms": {},
        "peak_memory_mb": {},  # of the whole child process (setup included)
        "setup_peak_memory_mb": {},  # before the first inference: the rest is inference's own
    }
    per_size: dict[str, dict[tuple[str, int], float]] = {}
    for name in ("supsup", "impresslearn"):
        # Times: every (procedure, T) of a method in one process, calls interleaved, so that the
        # ratios compare measurements taken side by side. Memory: one process per (method, T),
        # so that each peak is that configuration's own.
        per_size[name] = _in_child(name, sizes, repeats)["seconds"]
        for t in sizes:
            child = _in_child(name, (t,), 1)
            result["peak_memory_mb"][f"{name}_T{t}"] = child["peak_mb"]
            result["setup_peak_memory_mb"][f"{name}_T{t}"] = child["setup_peak_mb"]
    for name, times in per_size.items():
        for (procedure, t), sec in times.items():
            label = name if procedure == "oneshot" else f"{name}_{procedure}"
            result["median_ms"][f"{label}_T{t}"] = 1e3 * sec
    first, last = sizes[0], sizes[-1]
    impress, supsup = per_size["impresslearn"], per_size["supsup"]
    result["ratio"] = impress["oneshot", last] / impress["oneshot", first]
    result["shortlist_ratio"] = impress["shortlist", last] / impress["shortlist", first]
    result["supsup_growth"] = supsup["oneshot", last] / supsup["oneshot", first]
    result["ratios"] = {
        f"impress_T{last}/T{first}": result["ratio"],
        f"impress_shortlist_T{last}/T{first}": result["shortlist_ratio"],
        f"supsup_T{last}/T{first}": result["supsup_growth"],
        f"supsup_shortlist_T{last}/T{first}": supsup["shortlist", last]
        / supsup["shortlist", first],
        f"impress_shortlist_calibrated_T{last}/T{first}": impress["shortlist_calibrated", last]
        / impress["shortlist_calibrated", first],
        f"impress_binary_shortlist_T{last}/T{first}": impress["binary_shortlist", last]
        / impress["binary_shortlist", first],
        f"supsup/impress_T{last}": supsup["oneshot", last] / impress["oneshot", last],
    }
    result["targets"] = {"ratio": 1.5, "shortlist_ratio": 2.0}
    return result


def _data_parallel_worker(
    rank: int,
    world: int,
    backbone: str,
    batch_size: int,
    steps: int,
    threads: int,
    init_file: str,
    queue,
) -> None:
    """One process of :func:`bench_data_parallel`: masked training steps on its share of the
    same global batch, gradients summed over the processes; rank 0 reports the step times."""
    import torch.distributed as dist

    from impresslearn.runtime import Runtime
    from impresslearn.train import backward

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
    runtime = Runtime.create("cpu")
    config, shape, x, y, _ = _setup(backbone, batch_size)
    model = build_backbone(config, shape, 10)
    scores = _begin_scores(model, DENSITY.get(backbone, DensityRule("uniform", 0.5)), "topk")
    optimizer = torch.optim.RMSprop(scores, lr=1e-4)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(a), b)

    times = []
    with norm_stats(model, 0, learn=True):
        for i in range(steps + max(2, steps // 10)):
            runtime.barrier()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            backward(scores, loss, x, y, runtime)
            optimizer.step()
            runtime.barrier()
            if i >= max(2, steps // 10):  # warm-up steps are not timed
                times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(statistics.median(times))
    if world > 1:
        dist.destroy_process_group()


def _data_parallel_round(
    backbone: str, batch_size: int, steps: int, world: int, threads: int
) -> float:
    """Median step seconds of ``world`` fresh processes of ``threads`` threads each."""
    import multiprocessing
    import tempfile

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as folder:
        init_file = str(Path(folder) / "rendezvous")
        procs = [
            ctx.Process(
                target=_data_parallel_worker,
                args=(r, world, backbone, batch_size, steps, threads, init_file, queue),
            )
            for r in range(world)
        ]
        for p in procs:
            p.start()
        seconds = queue.get(timeout=600)
        for p in procs:
            p.join()
    return seconds


@BENCHMARKS.register("data-parallel")
def bench_data_parallel(
    backbone: str = "lenet_300_100",
    repeats: int | None = None,
    batch_size: int = 128,
    processes: int = 2,
) -> dict[str, Any]:
    """Masked training step on K CPU processes (gloo) vs one, on the same global batch.

    Each round starts fresh processes for each contender, in turn (1 process of 1 thread, 1 of K
    threads, K of 1 thread each), so the contenders share the machine's state alike; ``ratio`` is
    the median step time of K processes over that of one process of one thread (below 1: faster),
    ``ratio_vs_threads`` over one process with K threads. Every process draws the same batch and
    computes its share; the gradients are summed with ``torch.distributed`` (gloo).
    """
    steps = repeats or (200 if backbone in ("lenet_300_100", "fc_1024_1024") else 15)
    contenders = {
        "1_process_1_thread": (1, 1),
        f"1_process_{processes}_threads": (1, processes),
        f"{processes}_processes_1_thread": (processes, 1),
    }
    rounds = 3
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, (world, threads) in contenders.items():
            samples[name].append(_data_parallel_round(backbone, batch_size, steps, world, threads))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    parallel = medians[f"{processes}_processes_1_thread"]
    return {
        "benchmark": "data-parallel",
        "backbone": backbone,
        "batch_size": batch_size,
        "repeats": steps,
        "rounds": rounds,
        "processes": processes,
        "threads": 1,
        "ratio": parallel / medians["1_process_1_thread"],
        "ratio_vs_threads": parallel / medians[f"1_process_{processes}_threads"],
        "median_ms": {k: 1e3 * v for k, v in medians.items()},
    }


class _Measured(Exception):
    """Raised by bench stream's task callback when the measured tasks are done."""


def _rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


STREAM_METHODS = {
    "supsup": ["method.name=supsup"],
    "impresslearn": [
        "method.name=impresslearn",
        "method.num_impressions=10",
        "method.impression_kind=random",  # every task learns alphas: each costs the same
        "method.granularity=output_unit",
        "method.groups=8",
        "method.coeff_dtype=int8",
        "method.dedicated_masks=false",
    ],
}


@BENCHMARKS.register("stream")
def bench_stream(
    tasks: str = "10,100,1000,2500",
    steps: int = 2,
    repeats: int = 20,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Per-task cost outside training at task 10, 100, 1,000 and 2,500 of one long stream.

    A PermutedMNIST stream (real MNIST, LeNet-300-100, ``eval.matrix=diagonal``) learned with
    ``steps`` optimiser steps per task and checkpointed to a temporary run folder, for SupSup
    and ImpressLearn (10 random impressions, so that every task learns alphas; per-unit alphas in
    8 groups, int8). Per task: ``overhead``
    (wall seconds outside the training steps: evaluation of the new task, checkpoint, events,
    bookkeeping), ``bookkeeping`` (the same without the evaluation), checkpoint bytes written,
    resident memory; each the median over the ``repeats`` tasks that end at the named task.
    ``ratio`` = overhead at the last named task / at the first (worst of the two methods).
    """
    import tempfile

    from impresslearn.checkpoint import RunState
    from impresslearn.config import ExperimentConfig, apply_overrides
    from impresslearn.metrics import AccuracyMatrix
    from impresslearn.runners.stream import build_stream
    from impresslearn.runners.tasks import Checkpointer, learn_tasks
    from impresslearn.runtime import Runtime

    marks = sorted(int(t) for t in tasks.split(","))
    if marks[0] < 1 or repeats < 1 or steps < 1:
        raise ConfigError("bench stream: --tasks, --repeats and steps must be positive")
    # One task more than measured: the last task of a stream evaluates every task (the final
    # row), which is not per-task overhead; the loop stops before it.
    num_tasks = marks[-1] + 1
    base = [
        "scenario.name=permuted_mnist",
        "scenario.dataset=mnist",
        f"scenario.num_tasks={num_tasks}",
        "backbone.name=lenet_300_100",
        f"train.iterations={steps}",
        "eval.matrix=diagonal",
    ]
    results: dict[str, Any] = {}
    for name, overrides in STREAM_METHODS.items():
        config = apply_overrides(ExperimentConfig(name=f"bench-stream-{name}"), [*base, *overrides])
        stream = build_stream(config, data_root, Runtime.create("cpu"))
        with tempfile.TemporaryDirectory(prefix="impresslearn-bench-") as folder:
            out = Path(folder)
            (out / "config.json").write_text(config.to_json())
            checkpoints = Checkpointer(stream, out)
            stream.method.reserve(num_tasks)  # as the stream recipe does
            stream.method.prepare(stream.mask_trainer, num_tasks)
            state = RunState(0, AccuracyMatrix(num_tasks), [], [], 0.0)
            checkpoints.start(state)
            per_task: list[dict[str, float]] = []
            last = [time.perf_counter()]

            def on_task(t: int, written: int, per_task=per_task, last=last, state=state) -> None:
                now = time.perf_counter()
                event = state.events[t]
                wall = now - last[0]
                last[0] = now
                overhead = wall - event["train_seconds"]
                per_task.append(
                    {
                        "overhead": overhead,
                        "bookkeeping": overhead - event["eval_seconds"],
                        "bytes": written,
                        "rss_mb": _rss_mb(),
                    }
                )
                if len(per_task) == num_tasks - 1:
                    raise _Measured

            quiet = logging.getLogger("impresslearn.runners.tasks")
            level, quiet.level = quiet.level, logging.WARNING
            try:
                learn_tasks(stream, state, checkpoints, on_task)
            except _Measured:
                pass
            finally:
                quiet.setLevel(level)
        at = {}
        for mark in marks:
            window = per_task[max(0, mark - repeats) : mark]
            at[str(mark)] = {
                key: statistics.median(p[key] for p in window)
                for key in ("overhead", "bookkeeping", "bytes", "rss_mb")
            }
        first, final = at[str(marks[0])], at[str(marks[-1])]
        results[name] = {
            "at_task": at,
            "ratio": final["overhead"] / first["overhead"],
            "bookkeeping_ratio": final["bookkeeping"] / first["bookkeeping"],
            "bytes_ratio": final["bytes"] / first["bytes"],
            "mask_bytes": stream.method.bytes_per_task().get("mask", 0),
            "accuracy_when_learned": float(
                statistics.mean(state.matrix[t, t] for t in range(num_tasks - 1))
            ),
        }
    return {
        "benchmark": "stream",
        "backbone": "lenet_300_100",
        "tasks": marks,
        "steps_per_task": steps,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "methods": results,
        "ratio": max(r["ratio"] for r in results.values()),
        "targets": {"ratio": 1.2},
    }

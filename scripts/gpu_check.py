"""The GPU check: device tests, short runs, timings, then the paper's SplitCIFAR100 protocol.

Run by ``scripts/gpu_check.sh`` on a machine with CUDA (it stops itself before ``--minutes``).
Every figure goes into one JSON file, rewritten after each step, so a run cut off by its time
limit still returns everything it measured:

1. the test suite's device tests on this device (``tests/test_runtime.py``, ``tests/test_masks.py``);
2. ``supsup-split-cifar100`` (3 epochs per task) for 2 tasks, fp32 and bf16;
3. one-shot task inference over 250 PermutedMNIST tasks (LeNet-300-100, 500 outputs, one image);
4. ``bench mask-step`` for LeNet-300-100, GEMResNet18 and ResNet-50;
5. ``supsup-split-imagenet-paper``'s protocol (ResNet-50 at 224 px, streamed, 8 workers) for 2
   tasks of 5 classes on a tree of real images written on the spot (the subset's CIFAR-100 images
   upscaled to 256 px JPEG): training images per second and the GPU's utilisation;
6. as many tasks of ``supsup-split-cifar100-paper`` (250 epochs per task) as fit in the time left.

The data comes from ``--data-root`` as written by ``scripts/export_gpu_data.py`` (MNIST and the
CIFAR-100 classes of the first tasks, data set ``cifar100_subset``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from impresslearn.bench import bench_mask_step
from impresslearn.config import apply_overrides
from impresslearn.presets import get_preset
from impresslearn.runners import run_experiment
from impresslearn.runtime import Runtime


class Check:
    """The figures so far, rewritten to ``path`` after every step."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path, self.deadline = path, deadline
        self.figures: dict = {"steps": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, step: str, value) -> None:
        self.figures["steps"][step] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.figures, indent=2, default=str) + "\n")
        tmp.replace(self.path)
        print(f"[{self.left():6.0f} s left] {step}: {json.dumps(value, default=str)[:300]}")

    def step(self, name: str, fn, *, needs: float) -> None:
        """Run ``fn`` if at least ``needs`` seconds are left; record its result or its error."""
        if self.left() < needs:
            self.record(name, {"skipped": f"only {self.left():.0f} s left, needs {needs:.0f}"})
            return
        start = time.monotonic()
        try:
            value = fn()
        except Exception as error:  # a failed step is a figure too; the next step still runs
            value = {"error": f"{type(error).__name__}: {error}"}
        if isinstance(value, dict):
            value["wall_s"] = round(time.monotonic() - start, 1)
        self.record(name, value)


def device_tests(device: str) -> dict:
    env = {**os.environ, "IMPRESSLEARN_TEST_DEVICE": device}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_runtime.py",
            "tests/test_masks.py",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    tail = proc.stdout.strip().splitlines()[-15:]
    return {"exit_status": proc.returncode, "summary": tail[-1] if tail else "", "tail": tail}


def short_cifar(runtime: Runtime, data_root: Path, out: Path, precision: str, quick: bool) -> dict:
    overrides = ["scenario.dataset=cifar100_subset", "scenario.num_tasks=2"]
    if quick:
        overrides += ["train.iterations=3", "eval.batch_size=100"]
    config = apply_overrides(get_preset("supsup-split-cifar100"), overrides)
    result = run_experiment(
        config,
        data_root,
        out / f"cifar-{precision}",
        overwrite=True,
        device=runtime.device,
        precision=precision,
    )
    m = result.metrics
    keys = (
        "average_accuracy",
        "forgetting",
        "final_accuracies",
        "seconds_per_task",
        "task_seconds",
        "peak_device_memory_mb",
        "device_name",
        "precision",
    )
    return {k: m.get(k) for k in keys}


def streamed_imagenet(runtime: Runtime, data_root: Path, out: Path, quick: bool) -> dict:
    """A few steps of SupSup's SplitImageNet protocol on a streamed tree of real images."""
    import numpy as np
    from PIL import Image

    from impresslearn.data import load_dataset

    data = load_dataset("cifar100_subset", data_root)
    tree, per_class = out / "tree", 10 if quick else 100
    classes = sorted(set(data.train.labels.tolist()))[:10]
    for split, part, count in (
        ("train", data.train, per_class),
        ("val", data.test, per_class // 5),
    ):
        labels = part.labels.numpy()
        for c in classes:
            folder = tree / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for row in np.flatnonzero(labels == c)[:count]:
                image = Image.fromarray(part.images[row].numpy()).resize((256, 256))
                image.save(folder / f"{row}.jpg", quality=90)
    size = 64 if quick else 224
    overrides = [
        f"scenario.dataset=folder:{tree}@{size}",
        "scenario.class_order=",
        "scenario.num_tasks=2",
        "scenario.classes_per_task=5",
        f"train.batch_size={16 if quick else 128}",
        f"train.iterations={2 if quick else 20}",
        "eval.batch_size=100",
    ]
    config = apply_overrides(get_preset("supsup-split-imagenet-paper"), overrides)
    result = run_experiment(
        config, data_root, out / "imagenet", overwrite=True, device=runtime.device, workers=8
    )
    m = result.metrics
    events = [json.loads(line) for line in (out / "imagenet" / "events.jsonl").open()]
    steps = config.train.iterations * config.train.batch_size
    utilisation = None
    try:
        utilisation = torch.cuda.utilization(runtime.device)  # needs pynvml
    except Exception as error:  # noqa: BLE001: report why there is no figure
        utilisation = f"not available: {type(error).__name__}"
    return {
        "images_per_s_training": [steps / e["train_seconds"] for e in events],
        "gpu_utilisation_percent_at_end": utilisation,
        "average_accuracy": m.get("average_accuracy"),
        "forgetting": m.get("forgetting"),
        "workers": m.get("workers"),
        "peak_device_memory_mb": m.get("peak_device_memory_mb"),
    }


def inference_timing(runtime: Runtime, num_tasks: int, repeats: int) -> dict:
    from impresslearn.bench import _inference_setup
    from impresslearn.inference import infer_task

    times = {}
    for name in ("supsup", "impresslearn"):
        method, x = _inference_setup(name, num_tasks)
        method.to(runtime.device)
        x = x.to(runtime.device)
        samples = []
        for i in range(repeats + 2):
            runtime.synchronize()
            start = time.perf_counter()
            infer_task(method, x, objective="superfluous", num_classes=10)
            runtime.synchronize()
            if i >= 2:  # two warm-up calls
                samples.append(time.perf_counter() - start)
        times[name] = 1e3 * statistics.median(samples)
    return {"tasks": num_tasks, "median_ms_per_image": times, "repeats": repeats}


def paper_cifar(runtime: Runtime, data_root: Path, out: Path, seconds: float, tasks: int) -> dict:
    """``supsup-split-cifar100-paper`` in a child process stopped after ``seconds``; the figures
    are read from the run folder's event log (one line per finished task)."""
    folder = out / "cifar-paper"
    cmd = [
        sys.executable,
        "-m",
        "impresslearn",
        "run",
        "supsup-split-cifar100-paper",
        "--quiet",
        "--device",
        str(runtime.device),
        "--data-root",
        str(data_root),
        "--out",
        str(folder),
        "--overwrite",
        "--set",
        "scenario.dataset=cifar100_subset",
        "--set",
        f"scenario.num_tasks={tasks}",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=max(1.0, seconds))
        stopped = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        stopped = True
    events = []
    if (folder / "events.jsonl").is_file():
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return {
        "epochs_per_task": 250,
        "tasks_finished": len(events),
        "stopped_at_time_limit": stopped,
        "exit_status": proc.returncode,
        "stderr_tail": (proc.stderr.read() or "")[-500:],
        "accuracy_per_task": [e["accuracy"] for e in events],
        "seconds_per_task": [e["seconds"] for e in events],
        "seconds_per_epoch": [e["train_seconds"] / 250 for e in events],
        "wall_s": round(time.monotonic() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-root", type=Path, default=Path("gpu_data"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, to try the script on a CPU"
    )
    args = parser.parse_args()

    check = Check(args.out / "gpu_check.json", time.monotonic() + 60 * args.minutes)
    runtime = Runtime.create(args.device)
    check.record(
        "machine",
        {
            "device": str(runtime.device),
            "device_name": runtime.device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
        },
    )
    runs = Path("/tmp/impresslearn-gpu-check")
    quick = args.quick
    check.step("device_tests", lambda: device_tests(args.device), needs=60)
    for precision in ("fp32", "bf16"):
        check.step(
            f"supsup_split_cifar100_2_tasks_{precision}",
            lambda p=precision: short_cifar(runtime, args.data_root, runs, p, quick),
            needs=45,
        )
    check.step(
        "inference_250_tasks",
        lambda: inference_timing(runtime, 20 if quick else 250, 3 if quick else 20),
        needs=30,
    )
    for backbone in ("lenet_300_100", "gem_resnet18", "resnet50"):
        repeats = {"lenet_300_100": 200, "gem_resnet18": 60, "resnet50": 20}[backbone]
        check.step(
            f"mask_step_{backbone}",
            lambda b=backbone, r=repeats: bench_mask_step(
                b, repeats=3 if quick else r, device=runtime.device
            ),
            needs=40,
        )
    check.step(
        "streamed_split_imagenet_protocol",
        lambda: streamed_imagenet(runtime, args.data_root, runs, quick),
        needs=90,
    )
    check.step(
        "supsup_split_cifar100_paper",
        lambda: paper_cifar(runtime, args.data_root, runs, check.left() - 15, 3),
        needs=60,
    )
    check.record("done", {"seconds_left": round(check.left(), 1)})


if __name__ == "__main__":
    main()

"""Streamed image folders, on trees of real CIFAR-100 images written as JPEG and PNG files (some
upscaled to 224 px): the same images as in memory, batches independent of the workers, the
layouts users have, class-order files, damaged files, bounded memory."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.data import load_cifar100, load_dataset
from impresslearn.data.image_files import index_image_tree
from impresslearn.data.streaming import StreamedImageData
from impresslearn.errors import DataError
from impresslearn.runners import load_run
from impresslearn.scenarios import build_scenario

CLASSES = ["apple", "bear", "bus", "cup", "dolphin", "maple", "rose", "train"]


@pytest.fixture(scope="module")
def cifar(shared_data_root):
    return load_cifar100(shared_data_root)


def _write(images, labels, folder_of, suffix=".jpg", upscale=()):
    """Write images (uint8 HWC) to folder_of(row, label)/NAME; rows in ``upscale`` at 224 px."""
    written = []
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = folder_of(row, label) / f"img{row:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if row in upscale:
            picture = picture.resize((224, 224), Image.Resampling.BILINEAR)
        picture.save(path, quality=95) if suffix == ".jpg" else picture.save(path)
        written.append((path, label))
    return written


def _pick(split, per_class):
    rows = np.concatenate(
        [np.flatnonzero(split.labels.numpy() == c)[:per_class] for c in range(len(CLASSES))]
    )
    return split.images.numpy()[rows], split.labels.numpy()[rows]


@pytest.fixture(scope="module")
def tree(cifar, tmp_path_factory):
    """Class folders: train as JPEG (every 10th upscaled to 224 px), test as PNG."""
    root = tmp_path_factory.mktemp("tree")
    images, labels = _pick(cifar.train, 30)
    _write(images, labels, lambda r, c: root / "train" / CLASSES[c], ".jpg", set(range(0, 240, 10)))
    images, labels = _pick(cifar.test, 10)
    _write(images, labels, lambda r, c: root / "test" / CLASSES[c], ".png")
    return root


def test_streamed_and_in_memory_give_the_same_images_and_labels(tree):
    memory = load_dataset(f"folder:{tree}@32", None, loading="memory")
    streamed = load_dataset(f"folder:{tree}@32", None, loading="stream")
    assert isinstance(streamed, StreamedImageData)
    assert streamed.class_names == memory.class_names == tuple(CLASSES)
    for split in ("train", "test"):
        held, files = getattr(memory, split), getattr(streamed, split)
        assert torch.equal(held.labels, files.labels)
        rows = torch.arange(len(files))
        decoded = streamed.source(split, augment=False).decode(rows)
        assert torch.equal(decoded, held.images)  # 224-px files resized and cropped alike
    # the normalisation is measured on the training images in both (all of them: fewer than 1,000)
    assert np.allclose(streamed.mean, memory.mean, atol=1e-6)
    assert np.allclose(streamed.std, memory.std, atol=1e-6)


@pytest.mark.parametrize("augment", [True, False])
def test_batch_order_and_augmentation_do_not_depend_on_the_workers(tree, augment):
    streamed = load_dataset(f"folder:{tree}@32", None, loading="stream")
    indices, labels = torch.arange(len(streamed.train)), streamed.train.labels

    def batches(workers):
        source = streamed.with_workers(workers).source("train", augment=augment)
        gen = torch.Generator().manual_seed(5)
        return list(source.train_batches(indices, labels, 64, 9, gen))  # 2 passes and a bit

    alone, two = batches(0), batches(2)
    assert len(alone) == 9
    for (x0, y0), (x2, y2) in zip(alone, two, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(alone[0][1], alone[4][1])  # reshuffled each pass


def test_each_process_decodes_only_its_share_of_a_batch(tree):
    streamed = load_dataset(f"folder:{tree}@32", None, loading="stream")
    source = streamed.source("train", augment=True)
    indices, labels = torch.arange(len(streamed.train)), streamed.train.labels
    whole = list(source.train_batches(indices, labels, 50, 3, torch.Generator().manual_seed(1)))
    for rank in range(2):

        def share(n, rank=rank):
            half = (n + 1) // 2
            return slice(0, half) if rank == 0 else slice(half, n)

        gen = torch.Generator().manual_seed(1)
        parts = list(source.train_batches(indices, labels, 50, 3, gen, share))
        for (x, y), (xs, ys) in zip(whole, parts, strict=True):
            mine = share(len(y))
            assert torch.equal(ys, y) and torch.equal(xs[mine], x[mine])
            others = torch.ones(len(y), dtype=torch.bool)
            others[mine] = False
            assert not xs[others].any()  # never decoded here


def test_tinyimagenet_and_imagenet_validation_layouts_load_the_right_labels(cifar, tmp_path):
    images, labels = _pick(cifar.train, 12)
    test_images, test_labels = _pick(cifar.test, 4)
    wnids = [f"n0{1000 + c}" for c in range(len(CLASSES))]
    # TinyImageNet: train/<wnid>/images/*.JPEG, val/images/*.JPEG + val/val_annotations.txt
    tiny = tmp_path / "tiny"
    _write(images, labels, lambda r, c: tiny / "train" / wnids[c] / "images", ".jpg")
    written = _write(test_images, test_labels, lambda r, c: tiny / "val" / "images", ".jpg")
    lines = [f"{p.name}\t{wnids[c]}\t0\t0\t31\t31" for p, c in written]
    (tiny / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    # ImageNet: train/<wnid>/*.JPEG, val/*.JPEG and LOC_val_solution.csv (names without suffix)
    imagenet = tmp_path / "imagenet"
    _write(images, labels, lambda r, c: imagenet / "train" / wnids[c], ".jpg")
    written = _write(test_images, test_labels, lambda r, c: imagenet / "val", ".jpg")
    lines = ["ImageId,PredictionString"]
    lines += [f"{p.stem},{wnids[c]} 1 2 30 31 {wnids[c]} 0 0 5 5" for p, c in written]
    (imagenet / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    for root, layout in ((tiny, "TinyImageNet"), (imagenet, "flat validation folder with labels")):
        index = index_image_tree(root)
        assert index.layout == layout and index.class_names == tuple(wnids)
        by_file = {
            Path(p).name: int(y) for p, y in zip(index.test.paths, index.test.labels, strict=True)
        }
        assert by_file == {p.name: int(c) for p, c in written}
        assert sorted(index.train.labels.tolist()) == sorted(labels.tolist())
    # a labels file naming an unknown class or a missing image, and an unlabelled image
    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    annotations = bad / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace(wnids[0], "n09999999", 1))
    with pytest.raises(DataError, match=r"val_annotations.txt line 1 labels .* 'n09999999'"):
        index_image_tree(bad)
    annotations.write_text("\n".join(lines[1:3]).replace(",", "\t") + "\n")
    with pytest.raises(DataError, match=r"have no line in .*val_annotations.txt"):
        index_image_tree(bad)
    (bad / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match=r"val fits no layout: expected the same class folders"):
        index_image_tree(bad)


def test_a_class_order_file_reproduces_the_given_split(tree, tmp_path):
    order = tmp_path / "order.txt"
    order.write_text("rose bus\ncup apple\ntrain dolphin\n")
    config = apply_overrides(
        ExperimentConfig(),
        [
            "scenario.name=split_images",
            f"scenario.dataset=folder:{tree}@32",
            "scenario.num_tasks=3",
            f"scenario.class_order={order}",
        ],
    )
    for loading in ("memory", "stream"):
        data = load_dataset(config.scenario.dataset, None, loading=loading)
        scenario = build_scenario(config.scenario, data)
        assert scenario.num_classes == 2
        names = [[CLASSES[c] for c in scenario.classes(t)] for t in range(3)]
        assert names == [["rose", "bus"], ["cup", "apple"], ["train", "dolphin"]]
        assert scenario.task_name(0) == "classes rose/bus"
    order.write_text("rose\nbus\ncup\napple\n")  # one class per line, cut by classes_per_task
    data = load_dataset(config.scenario.dataset, None)
    two = apply_overrides(config, ["scenario.num_tasks=2", "scenario.classes_per_task=2"])
    assert [build_scenario(two.scenario, data).classes(t) for t in range(2)] == [[6, 2], [3, 0]]
    order.write_text("rose bus\ncup tulip\n")
    with pytest.raises(DataError, match=r"line 2: 'tulip' is not a class"):
        build_scenario(config.scenario, data)


STREAM_RUN = [
    "--set",
    "scenario.name=split_images",
    "--set",
    "scenario.loading=stream",
    "--set",
    "scenario.classes_per_task=2",
    "--set",
    "scenario.num_tasks=3",
    "--set",
    "train.iterations=6",
    "--set",
    "train.batch_size=16",
    "--set",
    "eval.batch_size=40",
    "--quiet",
    "--workers",
    "1",
]


def test_a_damaged_file_is_named_before_training_or_stops_the_run_with_its_checkpoint(
    tree, tmp_path, capsys
):
    damaged = tmp_path / "damaged"
    shutil.copytree(tree, damaged)
    files = sorted((damaged / "train").rglob("*.jpg"))
    # a header that is not an image: found before the task trains
    files[0].write_bytes(b"not an image at all")
    argv = ["run", "quickstart-supsup", "--set", f"scenario.dataset=folder:{damaged}@32"]
    run = tmp_path / "run"
    assert main([*argv, *STREAM_RUN, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"cannot decode the image {files[0]}" in err and err.count("\n") == 1
    # a file cut short after a valid header: found when its batch is decoded (a test image of
    # task 2: the training images are all decoded once at the start, for the normalisation)
    shutil.copy(tree / "train" / files[0].parent.name / files[0].name, files[0])
    data = load_dataset(f"folder:{damaged}@32", None, loading="stream")
    config = apply_overrides(ExperimentConfig(), ["scenario.name=split_images"])
    scenario = build_scenario(
        apply_overrides(
            config,
            [
                f"scenario.dataset=folder:{damaged}@32",
                "scenario.classes_per_task=2",
                "scenario.num_tasks=3",
            ],
        ).scenario,
        data,
    )
    task2 = scenario.test_data(1)
    victim = Path(data.test.paths[int(task2.x[0])])
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 3])
    assert main([*argv, *STREAM_RUN, "--out", str(run), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"cannot decode the image {victim}" in err and err.count("\n") == 1
    assert load_run(run).state.next_task == 1  # task 1's checkpoint is intact
    shutil.copy(tree / "test" / victim.parent.name / victim.name, victim)
    assert main(["run", "--resume", str(run), "--quiet", "--workers", "0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["forgetting"] == 0.0 and metrics["num_tasks"] == 3


# Peak resident memory of this process image: VmHWM (ru_maxrss would include the memory of the
# process it was forked from, the test runner, since Linux carries it across exec).
MEMORY_PROBE = """
import json, sys, torch
from pathlib import Path
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.runners import run_experiment
torch.set_num_threads(1)
config = apply_overrides(ExperimentConfig(), sys.argv[2:])
run_experiment(config, None, None, workers=0)
status = Path("/proc/self/status").read_text().splitlines()
print(json.dumps(int(next(l for l in status if l.startswith("VmHWM")).split()[1]) * 1024))
"""


@pytest.mark.slow
def test_a_tree_of_20000_images_trains_with_bounded_memory(cifar, tmp_path):
    """20,000 real CIFAR-100 images (100 classes) at 64 px: a few training steps of two tasks,
    each run in a fresh process. Streamed, the peak resident memory is that of a tree ten times
    smaller within 48 MiB, and below the in-memory run's by at least the decoded tree's size
    less 64 MiB."""
    names = [f"c{c:03d}" for c in range(100)]
    for count in (2000, 20000):
        for row in range(0 if count == 2000 else 2000, count):
            for root in [tmp_path / "big"] + ([tmp_path / "small"] if count == 2000 else []):
                folder = root / names[cifar.train.labels[row]]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(cifar.train.images[row].numpy()).save(folder / f"{row:05d}.png")
    size = 64
    common = [
        "scenario.name=split_images",
        "scenario.num_tasks=2",
        "scenario.classes_per_task=5",
        "train.iterations=3",
        "train.batch_size=32",
        "eval.batch_size=100",
        "eval.matrix=diagonal",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def peak(loading, tree):
        dataset = f"scenario.dataset=folder:{tmp_path / tree}@{size}"
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                MEMORY_PROBE,
                "x",
                *common,
                dataset,
                f"scenario.loading={loading}",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[-1])

    small, streamed, memory = peak("stream", "small"), peak("stream", "big"), peak("memory", "big")
    decoded = 20000 * size * size * 3  # 246 MB held by the in-memory run
    mib = 2**20
    print(
        f"peak RSS: streamed {small / mib:.0f} MiB (2,000 images), {streamed / mib:.0f} MiB "
        f"(20,000); in memory {memory / mib:.0f} MiB (20,000)"
    )
    assert streamed - small < 48 * mib
    assert memory - streamed > decoded - 64 * mib


def test_a_streamed_run_on_two_processes_matches_one(tree, tmp_path):
    """Under torchrun each process decodes only its share of every batch; the run matches a
    single process's up to summation order (the same batches, the gradients summed)."""
    sets = [
        "--set",
        "scenario.name=split_images",
        "--set",
        f"scenario.dataset=folder:{tree}@32",
        "--set",
        "scenario.loading=stream",
        "--set",
        "scenario.classes_per_task=2",
        "--set",
        "scenario.num_tasks=2",
        "--set",
        "train.iterations=30",
        "--set",
        "train.batch_size=32",
        "--quiet",
    ]
    assert main(["run", "quickstart-supsup", *sets, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "impresslearn", "run", "quickstart-supsup", *sets, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert two["processes"] == 2 and two["forgetting"] == 0
    print("one process", one["final_accuracies"], "two", two["final_accuracies"])
    assert two["final_accuracies"] == pytest.approx(one["final_accuracies"], abs=0.05)

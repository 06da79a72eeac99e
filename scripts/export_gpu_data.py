"""Write the small data folder a GPU machine needs: MNIST and the classes of a few SplitCIFAR100 tasks.

A lent GPU machine receives only the working tree plus a few carried folders (64 MiB in all), not
the full data root. This writes ``OUT/mnist/`` (the four idx files, 11 MB) and
``OUT/cifar100-subset/cifar100-subset.npz`` (data set ``cifar100_subset``: the complete train and
test images of the classes of SplitCIFAR100's first ``--cifar-tasks`` tasks for scenario seed 0,
about 9 MB per task), so ``--data-root OUT`` runs the MNIST presets and SplitCIFAR100 with
``--set scenario.dataset=cifar100_subset --set scenario.num_tasks=K``.

    python scripts/export_gpu_data.py --data-root ../shared/data --out gpu_data --cifar-tasks 3
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from impresslearn.data import load_dataset
from impresslearn.data.cifar_subset import SUBSET_FILE, SUBSET_FOLDER, write_cifar100_subset
from impresslearn.data.idx_datasets import MNIST
from impresslearn.scenarios import ScenarioConfig, build_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("gpu_data"))
    parser.add_argument("--cifar-tasks", type=int, default=3)
    args = parser.parse_args()

    mnist = load_dataset("mnist", args.data_root)  # verified before it is copied
    source = next(p for p in (args.data_root / "mnist", args.data_root) if p.is_dir())
    (args.out / "mnist").mkdir(parents=True, exist_ok=True)
    for name in MNIST.md5:
        found = [p for p in (source / name, source / f"{name}.gz") if p.is_file()]
        shutil.copy2(found[-1], args.out / "mnist" / found[-1].name)
    print(f"mnist: {len(mnist.train)} + {len(mnist.test)} images -> {args.out / 'mnist'}")

    cifar = load_dataset("cifar100", args.data_root)
    config = ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20, seed=0)
    scenario = build_scenario(config, cifar)
    classes = [c for t in range(args.cifar_tasks) for c in scenario.classes(t)]
    path = args.out / SUBSET_FOLDER / SUBSET_FILE
    size = write_cifar100_subset(cifar, classes, path)
    print(
        f"cifar100_subset: classes of tasks 0..{args.cifar_tasks - 1} ({len(classes)}), "
        f"{size / 2**20:.1f} MiB -> {path}"
    )


if __name__ == "__main__":
    main()

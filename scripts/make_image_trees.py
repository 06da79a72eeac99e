"""Write real CIFAR-100 images as image-folder trees in the layouts impresslearn reads, to try the
streamed data path and the image-folder presets on real images without ImageNet.

    python scripts/make_image_trees.py OUT --layout tinyimagenet --classes 20 --size 64
    python scripts/make_image_trees.py OUT --layout imagenet --classes 10 --size 320

Layouts: ``tinyimagenet`` (train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt),
``imagenet`` (train/<wnid>/*.JPEG, val/*.JPEG + LOC_val_solution.csv), ``folders``
(train/<class>/*.jpg, test/<class>/*.png). Images are upscaled bilinearly to ``--size``; the
class names are made-up WordNet-style ids (n00000000 + class index) for the first two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from impresslearn.data import load_cifar100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--layout", choices=("tinyimagenet", "imagenet", "folders"), required=True)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    data = load_cifar100(args.data_root)
    names = [f"n{c:08d}" for c in range(args.classes)]
    annotations = []
    for split, part, count in (
        ("train", data.train, args.train_per_class),
        ("val", data.test, args.test_per_class),
    ):
        labels = part.labels.numpy()
        for c in range(args.classes):
            for row in np.flatnonzero(labels == c)[:count]:
                image = Image.fromarray(part.images[row].numpy())
                if args.size != image.width:
                    image = image.resize((args.size, args.size), Image.Resampling.BILINEAR)
                name = f"{names[c]}_{row}"
                if args.layout == "folders":
                    folder = args.out / ("train" if split == "train" else "test") / names[c]
                    suffix = ".jpg" if split == "train" else ".png"
                elif split == "train":
                    folder = args.out / "train" / names[c]
                    folder = folder / "images" if args.layout == "tinyimagenet" else folder
                    suffix = ".JPEG"
                else:
                    folder = args.out / "val"
                    folder = folder / "images" if args.layout == "tinyimagenet" else folder
                    suffix = ".JPEG"
                    annotations.append((name + suffix, names[c]))
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{name}{suffix}", quality=90)
    if args.layout == "tinyimagenet":
        lines = [
            f"{file}\t{wnid}\t0\t0\t{args.size - 1}\t{args.size - 1}" for file, wnid in annotations
        ]
        (args.out / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    elif args.layout == "imagenet":
        lines = ["ImageId,PredictionString"]
        lines += [f"{Path(file).stem},{wnid} 0 0 1 1" for file, wnid in annotations]
        (args.out / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.layout} tree of {args.classes} classes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

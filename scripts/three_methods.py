"""SupSup, ImpressLearn and WSN on one stream: runs the three presets of the stream one after
another into OUT/<preset>, then writes one comparison table (OUT/comparison.md: accuracy,
forgetting, bytes per task, seconds per task) and figure (OUT/comparison.png).

    python scripts/three_methods.py permuted-mnist --out runs/three-pm [--set KEY=VALUE ...]

Streams and their presets:

    permuted-mnist       supsup-permuted-mnist-10, impress-permuted-mnist-10, wsn-permuted-mnist
    split-cifar100       supsup-split-cifar100, impress-split-cifar100, wsn-split-cifar100
    cifar100-superclass  supsup-cifar100-superclass, impress-cifar100-superclass,
                         wsn-cifar100-superclass

``--set`` overrides go to all three (e.g. ``--set scenario.num_tasks=10``), ``--impressions N``
and ``--impress-set KEY=VALUE`` to ImpressLearn's (its number of impressions, below the number of
tasks; its impressions' training, e.g. ``method.impressions.epochs=1``); ``--data-root`` and
the other ``impresslearn run`` options after ``--`` to all three. A finished preset folder is kept (run
again with ``--resume``-like behaviour: only the missing ones run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

STREAMS = {
    "permuted-mnist": (
        "supsup-permuted-mnist-10",
        "impress-permuted-mnist-10",
        "wsn-permuted-mnist",
    ),
    "split-cifar100": ("supsup-split-cifar100", "impress-split-cifar100", "wsn-split-cifar100"),
    "cifar100-superclass": (
        "supsup-cifar100-superclass",
        "impress-cifar100-superclass",
        "wsn-cifar100-superclass",
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stream", choices=sorted(STREAMS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--impressions", type=int, help="ImpressLearn's method.num_impressions")
    parser.add_argument(
        "--impress-set", action="append", default=[], help="an override for ImpressLearn only"
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.run_options = argv[cut + 1 :]  # after --: options of impresslearn run
    command = [sys.executable, "-m", "impresslearn"]
    folders = []
    for preset in STREAMS[args.stream]:
        folder = args.out / preset
        folders.append(folder)
        if (folder / "metrics.json").is_file():
            print(f"{preset}: finished before, kept ({folder})")
            continue
        overrides = list(args.overrides)
        if preset.startswith("impress-"):
            overrides += args.impress_set
            if args.impressions:
                overrides.append(f"method.num_impressions={args.impressions}")
        sets = [a for o in overrides for a in ("--set", o)]
        run = [*command, "run", preset, "--out", str(folder), "--quiet", "--overwrite", *sets]
        print(f"{preset}: running", flush=True)
        subprocess.run([*run, *args.run_options], check=True)
    table = subprocess.run(
        [*command, "compare", *map(str, folders), "--plot", str(args.out / "comparison.png")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (args.out / "comparison.md").write_text(table)
    print(table)
    print(f"written: {args.out / 'comparison.md'}, {args.out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SIGKILL a long stream again and again, resume it each time, compare with an uninterrupted run.

A stream of ``--tasks`` PermutedMNIST tasks (the embedded MNIST, LeNet-300-100, ``--steps``
optimiser steps per task, ``eval.matrix=sampled:2``) is run once uninterrupted, then once more
with ``--kills`` SIGKILLs: half at random moments, half the moment the task segments file grows
(the segment of a task is on disk, its manifest perhaps not yet: a kill inside a checkpoint
write). After each kill the run is resumed. At the end the two runs must agree exactly: the
accuracy matrix, every task's segment (mask or coefficients, statistics) and the logits of every
task on 256 test images. Prints one JSON object; exit status 1 if anything differs.

    python scripts/kill_long_stream.py --tasks 300 --kills 8          # SupSup
    python scripts/kill_long_stream.py --tasks 300 --kills 8 --method impresslearn
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from impresslearn.checkpoint import CHECKPOINT_NAME
from impresslearn.checkpoint.files import Manifest, read_segments, segments_path
from impresslearn.metrics import AccuracyMatrix
from impresslearn.runners import load_run

IMPRESS = [
    "method.name=impresslearn",
    "method.num_impressions=4",
    "method.impressions.iterations=40",
    "method.granularity=output_unit",
    "method.groups=8",
    "method.coeff_dtype=int8",
    "method.dedicated_masks=false",
]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "impresslearn", *args, "--quiet"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _segments_size(out: Path) -> int:
    try:
        return segments_path(out / CHECKPOINT_NAME).stat().st_size
    except FileNotFoundError:
        return -1


def _kill_when_segments_grow(proc: subprocess.Popen, out: Path, timeout: float) -> bool:
    """SIGKILL ``proc`` the moment ``checkpoint.tasks`` changes size; False if it never did."""
    before, end = _segments_size(out), time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if _segments_size(out) != before:
            proc.send_signal(signal.SIGKILL)
            return True
    return False


def _matrix(out: Path) -> AccuracyMatrix:
    return AccuracyMatrix.from_json(
        json.loads((out / "metrics.json").read_text())["accuracy_matrix"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--method", choices=["supsup", "impresslearn"], default="supsup")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sets = [
        "scenario.dataset=mnist_embedded",
        f"scenario.num_tasks={args.tasks}",
        f"train.iterations={args.steps}",
        "eval.matrix=sampled:2",
        *(IMPRESS if args.method == "impresslearn" else []),
    ]
    run_args = ["run", "quickstart-supsup", *(a for s in sets for a in ("--set", s))]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="impresslearn-kill-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        reference = _start([*run_args, "--out", str(tmp / "reference")], tmp)
        if reference.wait() != 0:
            raise SystemExit(reference.stderr.read().decode())
        uninterrupted = time.perf_counter() - start
        out = tmp / "killed"
        kills = []
        proc = _start([*run_args, "--out", str(out)], tmp)
        for k in range(args.kills):
            if k % 2 == 0:  # a random moment of the remaining run
                time.sleep(rng.uniform(1.0, 2 * uninterrupted / args.kills))
                proc.send_signal(signal.SIGKILL)
                where = "random"
            else:
                where = "segment appended" if _kill_when_segments_grow(proc, out, 60) else "none"
            proc.wait()
            manifest = Manifest.read(out / CHECKPOINT_NAME)
            stray = _segments_size(out) - (manifest.segment_bytes if manifest else 0)
            kills.append(
                {
                    "kill": where,
                    "tasks_saved": manifest.segments if manifest else 0,
                    "stray_segment_bytes": max(stray, 0),
                }
            )
            resume = ["run", "--resume", str(out)] if manifest else [*run_args, "--out", str(out)]
            proc = _start([*resume, "--overwrite"] if not manifest else resume, tmp)
        if proc.wait() != 0:
            raise SystemExit(proc.stderr.read().decode())
        same_matrix = _matrix(out) == _matrix(tmp / "reference")
        ours = read_segments(out / CHECKPOINT_NAME, Manifest.read(out / CHECKPOINT_NAME))
        theirs = read_segments(
            tmp / "reference" / CHECKPOINT_NAME, Manifest.read(tmp / "reference" / CHECKPOINT_NAME)
        )
        same_segments = len(ours) == len(theirs) and all(
            a.keys() == b.keys()
            and all(torch.equal(a[key], b[key]) for key in a)
            and (ma["task"], ma["added"]) == (mb["task"], mb["added"])
            for (a, ma, _), (b, mb, _) in zip(ours, theirs, strict=True)
        )
        growth = [
            json.loads((folder / "metrics.json").read_text())["checkpoint_growth_per_task"]
            for folder in (out, tmp / "reference")
        ]
        again, fresh = load_run(out), load_run(tmp / "reference")
        x = fresh.scenario(None).test_data(0).prepared()[:256]
        same_logits = all(
            torch.equal(again.logits(x, t), fresh.logits(x, t)) for t in range(args.tasks)
        )
    result = {
        "method": args.method,
        "tasks": args.tasks,
        "kills": kills,
        "identical_matrix": same_matrix,
        "identical_segments": same_segments,
        "identical_logits": same_logits,
        "checkpoint_growth_per_task": {"killed": growth[0], "uninterrupted": growth[1]},
        "uninterrupted_seconds": uninterrupted,
    }
    print(json.dumps(result, indent=1))
    return 0 if same_matrix and same_segments and same_logits else 1


if __name__ == "__main__":
    sys.exit(main())

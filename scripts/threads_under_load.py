"""The quickstart's wall time on an idle machine and beside another CPU-heavy job, with torch's
default threads (one per core, what impresslearn used before --threads auto) and with auto.

    python scripts/threads_under_load.py [--preset quickstart] [--json out.json]

The other job is a torch matrix-multiply loop on every core (its own threads, like another
training run). Each configuration runs once, in a fresh process, one after the other; the
machine must otherwise be idle. Prints the wall seconds, the ratio busy / idle for each thread
setting, and the count auto chose (from metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOG = """
import torch
torch.set_num_threads({cores})
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def run_quickstart(preset: str, threads: str, out: Path) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "impresslearn", "run", preset, "--out", str(out), "--overwrite"]
        + ["--quiet", "--threads", threads],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "metrics.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("idle", "busy"):
            hog = None
            if load == "busy":
                hog = subprocess.Popen([sys.executable, "-c", HOG.format(cores=cores)])
                time.sleep(2.0)  # let it spin up before the run samples the free cores
            try:
                for threads in (str(cores), "auto"):
                    seconds, metrics = run_quickstart(args.preset, threads, Path(tmp) / "run")
                    row = {
                        "load": load,
                        "threads_flag": threads,
                        "threads": metrics["threads"],
                        "chosen_by": metrics["threads_chosen_by"],
                        "wall_seconds": round(seconds, 1),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    by = {(r["load"], r["threads_flag"]): r["wall_seconds"] for r in rows}
    summary = {
        "preset": args.preset,
        "cores": cores,
        "rows": rows,
        "busy_over_idle": {
            f"default ({cores} threads)": by["busy", str(cores)] / by["idle", str(cores)],
            "auto": by["busy", "auto"] / by["idle", "auto"],
        },
    }
    print(json.dumps(summary["busy_over_idle"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

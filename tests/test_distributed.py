"""Data-parallel runs on torch.distributed: two CPU processes (gloo), launched by torchrun.

Every process draws the same global batch and takes its contiguous share; gradients are summed
across processes; evaluation is shared in whole batches (or tasks) and reduced; rank 0 alone
writes; ranks check after every task that they hold identical state.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from impresslearn.cli import main
from impresslearn.config import apply_overrides
from impresslearn.errors import ImpressLearnError
from impresslearn.layers import masked_layers
from impresslearn.metrics import AccuracyMatrix
from impresslearn.presets import get_preset
from impresslearn.runners import RunContext, load_run, run_experiment
from impresslearn.runners.seeds import run_seeds
from impresslearn.runtime import RanksDisagree, Runtime
from workers.data_parallel_step import run as one_step

WORKERS = Path(__file__).parent / "workers"
STREAM = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=3",
    "train.iterations=150",
    "eval.scenario=GNs",
]
SETS = [a for o in STREAM for a in ("--set", o)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKERS.parent.parent / "src")}


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *args,
    ]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_shares_joined_are_the_global_batch_even_uneven_or_empty():
    for total in (128, 7, 3, 1, 0):
        for world in (1, 2, 3, 4):
            shares = [Runtime(rank=r, world_size=world).rows(total) for r in range(world)]
            joined = [i for s in shares for i in range(total)[s]]
            assert joined == list(range(total)), (total, world)
            sizes = [len(range(total)[s]) for s in shares]
            assert max(sizes) - min(sizes) <= 1
    assert len(range(1)[Runtime(rank=1, world_size=2).rows(1)]) == 0  # an empty share


def test_one_step_on_two_processes_equals_one_process(tmp_path):
    sizes = ["128", "7", "1"]  # even, uneven, and one share empty
    done = torchrun(str(WORKERS / "data_parallel_step.py"), str(tmp_path), *sizes)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(2)]
    for size in map(int, sizes):
        single = one_step(size, None)
        a, b = ranks[0][size], ranks[1][size]
        assert a["rows"][0] == 0 and a["rows"][1] == b["rows"][0] and b["rows"][1] == size
        for g0, g1, g in zip(a["grads"], b["grads"], single["grads"], strict=True):
            assert torch.equal(g0, g1)  # the reduced gradient is the same on every rank
            torch.testing.assert_close(g0, g, rtol=1e-6, atol=1e-6 * float(g.abs().max()))
        for s0, s1 in zip(a["scores"], b["scores"], strict=True):
            assert torch.equal(s0, s1), "scores must be bit-identical across ranks"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    done = torchrun(
        "-m",
        "impresslearn",
        "run",
        "supsup-permuted-mnist",
        *SETS,
        "--out",
        str(root / "two"),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    config = apply_overrides(get_preset("supsup-permuted-mnist"), STREAM)
    single = run_experiment(config, None, root / "one", device="cpu")
    return root, single


def test_a_stream_on_two_processes_matches_one(two_process_run):
    root, single = two_process_run
    metrics = json.loads((root / "two" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["forgetting"] == 0
    two = AccuracyMatrix.from_json(metrics["accuracy_matrix"]).dense()
    np.testing.assert_allclose(two, single.accuracy_matrix, atol=0.005)
    # rank 0 alone wrote: the folder holds exactly what a single process writes
    assert sorted(p.name for p in (root / "two").iterdir()) == sorted(
        p.name for p in (root / "one").iterdir()
    )
    # masks learned on two processes vs one: summation order flips a few scores near the cut
    a, b = load_run(root / "one", device="cpu"), load_run(root / "two", device="cpu")
    for la, lb in zip(masked_layers(a.model), masked_layers(b.model), strict=True):
        hamming = float((la.bank != lb.bank).float().mean())
        print(f"layer {tuple(la.weight.shape)}: Hamming distance {hamming:.4%}")
        assert hamming < 0.05


def test_sharded_evaluation_equals_one_process_exactly(two_process_run, capsys):
    root, _ = two_process_run
    for extra in ([], ["--set", "eval.scenario=GNs"]):
        done = torchrun("-m", "impresslearn", "eval", str(root / "one"), "--quiet", *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        capsys.readouterr()
        assert main(["eval", str(root / "one"), "--quiet", *extra]) == 0
        assert done.stdout == capsys.readouterr().out  # the same table, every digit


def test_killing_one_process_stops_the_run_and_it_resumes_on_one(tmp_path):
    out = tmp_path / "run"
    slow = [*SETS, "--set", "train.iterations=1500", "--set", "scenario.num_tasks=4"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "impresslearn",
        "run",
        "supsup-permuted-mnist",
        *slow,
        "--out",
        str(out),
        "--quiet",
    ]
    launcher = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True)
    pids = [int(p) for p in workers.stdout.split()]
    assert len(pids) == 2, workers
    killed = time.monotonic()
    os.kill(pids[-1], signal.SIGKILL)
    code = launcher.wait(timeout=90)
    assert code != 0 and time.monotonic() - killed < 60
    # the last complete checkpoint resumes with one process
    assert main(["run", "--resume", str(out), "--quiet", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_tasks"] == 4 and metrics["forgetting"] == 0 and metrics["processes"] == 1


def test_repeats_over_seeds_on_two_processes_equal_one(tmp_path):
    sets = [*SETS, "--set", "scenario.num_tasks=2", "--set", "train.iterations=60"]
    done = torchrun(
        "-m",
        "impresslearn",
        "run",
        "supsup-permuted-mnist",
        *sets,
        "--seeds",
        "2",
        "--out",
        str(tmp_path / "two"),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    config = apply_overrides(
        get_preset("supsup-permuted-mnist"),
        [*STREAM, "scenario.num_tasks=2", "train.iterations=60"],
    )
    run_seeds(config, RunContext.create(None, tmp_path / "one", device="cpu"), 2)
    for i in range(2):
        one = json.loads((tmp_path / "one" / f"seed-{i}" / "metrics.json").read_text())
        two = json.loads((tmp_path / "two" / f"seed-{i}" / "metrics.json").read_text())
        assert one["accuracy_matrix"] == two["accuracy_matrix"]  # each repeat ran alone
        assert two["processes"] == 1
    assert (tmp_path / "two" / "seeds.json").is_file()


class _Disagreeing(Runtime):
    def gather(self, value):
        return [value, "something else"]


def test_ranks_that_drift_apart_fail_loudly():
    with pytest.raises(RanksDisagree, match="after task 3"):
        _Disagreeing(world_size=2).check_same("abc", "task 3")
    Runtime(world_size=1).check_same("abc", "task 3")  # alone: nothing to compare


def test_nns_is_refused_on_several_processes_with_what_to_do(tmp_path):
    done = torchrun(
        "-m",
        "impresslearn",
        "run",
        "supsup-nns-permuted-mnist",
        "--set",
        "scenario.dataset=mnist_embedded",
        "--out",
        str(tmp_path / "x"),
        "--quiet",
    )
    assert done.returncode != 0 and "runs on one process" in done.stderr
    assert not (tmp_path / "x").exists()
    assert issubclass(RanksDisagree, ImpressLearnError)


def test_dealt_work_far_longer_than_the_group_timeout_is_waited_for(tmp_path):
    """A process done with its share waits for the others however long theirs takes (a grid
    point can take hours): with a 2 s group timeout, rank 1 waits 6 s for rank 0's job."""
    done = torchrun(str(WORKERS / "uneven_deal.py"), str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank-{rank}.txt").read_text() == "{0: 0, 1: 10, 2: 20, 3: 30}"

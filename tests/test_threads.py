"""The intra-op thread choice: by the cores free, one per process under torch.distributed,
OMP_NUM_THREADS or an explicit count first; recorded in metrics.json and kept on resume."""

import json
import subprocess
import sys

import pytest
import torch

from impresslearn.cli import main
from impresslearn.errors import ConfigError
from impresslearn.threads import choose_threads, free_cores, parse_threads, usable_cores

RUN = ["--set", "scenario.num_tasks=2", "--set", "train.iterations=5", "--quiet"]


def test_the_choice_follows_its_order(monkeypatch):
    import impresslearn.threads as threads

    monkeypatch.setattr(threads, "free_cores", lambda: 0.2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert choose_threads(3, recorded=2, env={"OMP_NUM_THREADS": "4"}).count == 3
    assert choose_threads("auto", recorded=2, env={"OMP_NUM_THREADS": "4"}).count == 2
    omp = choose_threads("auto", env={"OMP_NUM_THREADS": "4"})
    assert omp.count == torch.get_num_threads() and omp.reason == "OMP_NUM_THREADS=4"
    assert choose_threads("auto", world_size=4, env={}).count == 1
    busy = choose_threads("auto", env={})
    assert (busy.count, busy.reason) == (1, "0.2 of 8 usable cores free")
    monkeypatch.setattr(threads, "free_cores", lambda: 5.8)
    assert choose_threads("auto", env={}).count == 6
    monkeypatch.setattr(threads, "free_cores", lambda: 5.6)
    assert choose_threads("auto", env={}).count == 5


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", ""])
def test_a_bad_count_is_refused(bad):
    with pytest.raises(ConfigError, match="threads must be 'auto' or a whole number >= 1"):
        parse_threads(bad)
    assert main(["run", "quickstart-supsup", "--threads", bad, *RUN]) == 2


def test_a_busy_core_is_not_counted_free():
    usable = usable_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        busy = free_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.0 <= busy <= usable - 0.6


def test_metrics_record_the_threads_and_a_resume_keeps_them(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    run = tmp_path / "run"
    assert main(["run", "quickstart-supsup", "--out", str(run), "--threads", "1", *RUN]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["threads"], metrics["threads_chosen_by"]) == (1, "--threads 1")
    assert json.loads((run / "checkpoint.json").read_text())["threads"] == 1
    torch.set_num_threads(2)
    longer = ["--set", "scenario.num_tasks=3", "--quiet"]
    assert main(["run", "--resume", str(run), *longer]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threads"] == 1
    assert metrics["threads_chosen_by"] == "the count the resumed run started with"

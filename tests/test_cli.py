"""The command line: list/show/run/bench, the run folder, and clear one-line errors."""

import json
import math

import pytest

from impresslearn.cli import main
from impresslearn.metrics import AccuracyMatrix
from impresslearn.presets import PRESETS

TINY = ["--set", "scenario.num_tasks=2", "--set", "train.iterations=20", "--quiet"]


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_registry(capsys):
    code, out, _ = _run(["list"], capsys)
    assert code == 0
    for name in PRESETS.names():
        assert name in out
    for word in ("lenet_300_100", "fc_1024_1024", "permuted_mnist", "rotated_mnist", "supsup"):
        assert word in out


def test_show_prints_resolved_config(capsys):
    code, out, _ = _run(["show", "quickstart-supsup", "--set", "train.lr=0.5"], capsys)
    assert code == 0
    assert json.loads(out)["train"]["lr"] == 0.5


def test_run_writes_run_folder_and_replays(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, _ = _run(["run", "quickstart-supsup", *TINY, "--out", str(out_dir)], capsys)
    assert code == 0
    assert "average accuracy" in out
    for name in (
        "config.json",
        "metrics.json",
        "accuracy_matrix.csv",
        "accuracy_matrix.png",
        "events.jsonl",
    ):
        assert (out_dir / name).is_file(), name
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for key in (
        "average_accuracy",
        "accuracy_matrix",
        "backward_transfer",
        "forgetting",
        "bytes_per_task",
        "seconds_per_task",
        "peak_memory_mb",
        "num_tasks",
        "method",
        "scenario",
        "backbone",
    ):
        assert key in metrics, key
    matrix = AccuracyMatrix.from_json(metrics["accuracy_matrix"])
    assert math.isnan(matrix[0, 1]) and matrix.num_entries == 3  # the evaluated entries only
    assert set(metrics["bytes_per_task"]) >= {"mask", "coeffs", "norm_stats"}
    assert len((out_dir / "events.jsonl").read_text().splitlines()) == 2

    replay = tmp_path / "replay"
    code, _, _ = _run(
        ["run", "--config", str(out_dir / "config.json"), "--out", str(replay), "--quiet"], capsys
    )
    assert code == 0
    again = json.loads((replay / "metrics.json").read_text())
    assert again["accuracy_matrix"] == metrics["accuracy_matrix"]


def test_run_refuses_folder_with_another_run(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert _run(["run", "quickstart-supsup", *TINY, "--out", str(out_dir)], capsys)[0] == 0
    code, _, err = _run(["run", "quickstart-supsup", *TINY, "--out", str(out_dir)], capsys)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    assert (
        _run(["run", "quickstart-supsup", *TINY, "--out", str(out_dir), "--overwrite"], capsys)[0]
        == 0
    )


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "no-such-preset"], "unknown preset 'no-such-preset'"),
        (
            ["run", "quickstart-supsup", "--set", "train.speed=2"],
            "unknown override key 'train.speed'",
        ),
        (["run", "quickstart-supsup", "--set", "method.density=0"], "density must be in (0, 1]"),
        (["run", "quickstart-supsup", "--set", "method.density=1.5"], "density must be in (0, 1]"),
        (["run", "quickstart-supsup", "--set", "train.lr=abc"], "train.lr must be a number"),
        (["run", "quickstart-supsup", "--data-root", "/no/such/folder"], "/no/such/folder"),
        (["run", "quickstart-supsup", "--set", "scenario.dataset=cifar1000"], "unknown data set"),
        (["run", "quickstart-supsup", "--set", "backbone.name=vgg"], "unknown backbone 'vgg'"),
        (
            ["run", "quickstart-supsup", "--set", "method.density=0.0000001"],
            "a mask must keep between 1 and 235200 weights",
        ),
        (
            [
                "run",
                "quickstart-supsup",
                "--set",
                "eval.scenario=GNu",
                "--set",
                "inference.objective=superfluous",
            ],
            "needs more outputs than classes",
        ),
        (["run", "quickstart-supsup", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "quickstart-supsup", "--device", "cuda:banana"], "unknown device 'cuda:banana'"),
        (["show", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_one_clear_line(argv, fragment, tmp_path, capsys):
    out_dir = tmp_path / "never"
    code, _, err = _run([*argv, "--out", str(out_dir)] if argv[0] == "run" else argv, capsys)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out_dir.exists(), "a failed run must not leave a folder behind"


def test_missing_dataset_names_where_it_looked(tmp_path, capsys):
    code, _, err = _run(
        [
            "run",
            "supsup-permuted-mnist",
            "--data-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "x"),
        ],
        capsys,
    )
    assert code == 2
    assert str(tmp_path) in err
    assert not (tmp_path / "x").exists()


def test_bench_json_has_ratio(capsys):
    code, out, _ = _run(["bench", "mask-step", "--json", "--repeats", "10"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["ratio"] > 0 and result["eval_ratio"] > 0


def test_bench_data_pipeline_on_real_cifar(shared_data_root, capsys):
    code, out, _ = _run(
        [
            "bench",
            "data-pipeline",
            "--json",
            "--repeats",
            "1",
            "--data-root",
            str(shared_data_root),
        ],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert 0 < result["ratio"] < 1  # batches are made faster than the model consumes them
    assert result["images_per_s"]["pipeline"] > result["images_per_s"]["model"]


def test_bench_stream_measures_per_task_overhead_on_real_mnist(shared_data_root, capsys):
    argv = ["bench", "stream", "--json", "--tasks", "2,5", "--repeats", "2"]
    code, out, _ = _run([*argv, "--data-root", str(shared_data_root)], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["tasks"] == [2, 5] and set(result["methods"]) == {"supsup", "impresslearn"}
    supsup = result["methods"]["supsup"]
    for method in result["methods"].values():
        assert set(method["at_task"]) == {"2", "5"}
        row = method["at_task"]["5"]
        assert 0 < row["bookkeeping"] <= row["overhead"] and row["rss_mb"] > 0
        assert method["bytes_ratio"] == pytest.approx(1.0, abs=0.01)  # appends, never rewrites
    # SupSup appends its new mask (1 bit per weight) plus a small constant, not the bank
    written = supsup["at_task"]["5"]["bytes"]
    assert supsup["mask_bytes"] < written < supsup["mask_bytes"] + 8_000
    assert result["ratio"] == max(m["ratio"] for m in result["methods"].values())
    assert _run(["bench", "stream", "--tasks", "0,5"], capsys)[0] == 2


@pytest.mark.parametrize("repeats", ["0", "-1"])
def test_bench_refuses_fewer_than_one_repeat(repeats, capsys):
    code, _, err = _run(["bench", "mask-step", "--repeats", repeats], capsys)
    assert code == 2 and f"--repeats must be at least 1, got {repeats}" in err


def test_diagonal_matrix_evaluates_each_task_once_then_all(tmp_path, capsys):
    out = tmp_path / "d"
    assert (
        _run(
            [
                "run",
                "quickstart-supsup",
                *TINY,
                "--set",
                "scenario.num_tasks=3",
                "--set",
                "eval.matrix=diagonal",
                "--out",
                str(out),
            ],
            capsys,
        )[0]
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    matrix = AccuracyMatrix.from_json(metrics["accuracy_matrix"]).dense()
    matrix = [[None if math.isnan(v) else v for v in row] for row in matrix]
    last = len(matrix) - 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            assert (value is not None) == (j == i or i == last), (i, j)
    assert metrics["forgetting"] == 0.0
    assert [matrix[j][j] for j in range(last + 1)] == matrix[last]


def test_compare_table_and_plot(tmp_path, capsys):
    for name in ("a", "b"):
        assert (
            _run(["run", "quickstart-supsup", *TINY, "--out", str(tmp_path / name)], capsys)[0] == 0
        )
    plot = tmp_path / "cmp.png"
    per_task = tmp_path / "per_task.png"
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(plot)]
    code, out, _ = _run([*argv, "--per-task-plot", str(per_task)], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| a ") or line.startswith("| b ")]
    assert len(rows) == 2 and "33275" in rows[0]
    assert plot.stat().st_size > 1000
    assert per_task.stat().st_size > 1000
    code, _, err = _run(["compare", str(tmp_path / "missing")], capsys)
    assert code == 2 and "metrics.json does not exist" in err


def test_data_check_reports_an_optional_data_set_without_failing_for_it(shared_data_root, capsys):
    code, out, _ = _run(["data", "check", "--data-root", str(shared_data_root)], capsys)
    lines = {line.split(":")[0].strip(): line for line in out.splitlines()[1:]}
    assert "not usable, optional" in lines["cifar100_subset"]
    required_failed = any("NOT USABLE" in line for line in lines.values())
    assert code == (1 if required_failed else 0)
    assert "NOT USABLE" not in lines["mnist"] and "NOT USABLE" not in lines["cifar100"]
    # named, it is checked like any other
    code, out, _ = _run(["data", "check", "cifar100_subset", "--data-root", "/tmp"], capsys)
    assert code == 1 and "cifar100_subset: NOT USABLE" in out


@pytest.mark.parametrize("out", ["/proc/impress", "/etc/passwd/x"])
def test_an_unusable_out_folder_is_a_one_line_error(out, capsys):
    code, _, err = _run(["run", "quickstart-supsup", *TINY, "--out", out], capsys)
    assert code == 2
    assert err.startswith(f"impresslearn: error: cannot use {out}") and err.count("\n") == 1


def test_an_unwritable_plot_is_a_one_line_error_after_the_table(tmp_path, capsys):
    run = tmp_path / "r"
    assert _run(["run", "quickstart-supsup", *TINY, "--out", str(run)], capsys)[0] == 0
    code, out, err = _run(["compare", str(run), "--plot", "/proc/x/cmp.png"], capsys)
    assert code == 2 and "cannot use /proc/x" in err and err.count("\n") == 1


def test_a_full_disk_during_a_run_keeps_the_last_checkpoint_and_says_how_to_go_on(
    tmp_path, capsys, monkeypatch
):
    import errno

    from impresslearn.checkpoint import files
    from impresslearn.runners import load_run

    real, calls = files.append_segment, []

    def full_disk(path, record, keep):
        calls.append(path)
        if len(calls) == 2:  # task 1's segment
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, record, keep)

    monkeypatch.setattr("impresslearn.checkpoint.append_segment", full_disk)
    run = tmp_path / "r"
    argv = ["run", "quickstart-supsup", *TINY, "--set", "scenario.num_tasks=3", "--out", str(run)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no space left on the device" in err and "impresslearn run --resume DIR" in err
    assert load_run(run).state.next_task == 1  # task 0 is kept whole
    monkeypatch.undo()
    code, out, _ = _run(["eval", str(run), "--quiet"], capsys)
    assert code == 0 and "the run is unfinished: 1 of its 3 tasks learned" in out
    _, acc, saved = out.splitlines()[1].split()
    assert acc == saved
    assert _run(["run", "--resume", str(run), "--quiet"], capsys)[0] == 0
    assert load_run(run).state.next_task == 3


def test_eval_saves_each_evaluation_beside_the_run_and_compare_shows_it(tmp_path, capsys):
    run = tmp_path / "r"
    assert _run(["run", "quickstart-supsup", *TINY, "--out", str(run)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    gnu = ["--set", "eval.scenario=GNu", "--set", "inference.procedure=binary"]
    assert (
        _run(["eval", str(run), "--quiet", *gnu, "--set", "inference.images=128"], capsys)[0] == 0
    )
    assert _run(["eval", str(run), "--quiet"], capsys)[0] == 0
    saved = sorted(p.name for p in (run / "evaluations").iterdir())
    assert saved == [
        "as-trained.json",
        "eval.scenario=GNu,inference.images=128,inference.procedure=binary.json",
    ]
    record = json.loads((run / "evaluations" / saved[1]).read_text())
    assert record["finished"] and record["eval"]["scenario"] == "GNu"
    assert 0 <= record["metrics"]["task_inference_accuracy"] <= 1
    # the training's own files are untouched
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    code, out, _ = _run(["compare", str(run)], capsys)
    rows = [
        line for line in out.splitlines() if line.startswith("| r ") or line.startswith("| r [")
    ]
    assert len(rows) == 3 and any("[eval eval.scenario=GNu" in r for r in rows)
    # --overwrite clears them with the run they belonged to
    assert (
        _run(["run", "quickstart-supsup", *TINY, "--out", str(run), "--overwrite"], capsys)[0] == 0
    )
    assert not (run / "evaluations").exists()


def test_a_batch_larger_than_a_task_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "big"
    argv = ["run", "quickstart-supsup", *TINY, "--set", "train.batch_size=1000000000"]
    code, _, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 2 and "is more than the 8000 training images" in err
    assert not out.exists()


def test_inference_settings_without_task_inference_are_warned_about(capsys, caplog):
    argv = ["show", "quickstart-supsup", "--set", "inference.procedure=binary"]
    with caplog.at_level("WARNING"):
        assert _run(argv, capsys)[0] == 0
    assert "inference.procedure=binary has no effect with eval.scenario=GG" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert _run([*argv, "--set", "eval.scenario=GNu"], capsys)[0] == 0
    assert "no effect" not in caplog.text


def test_a_stream_that_cannot_fit_in_memory_or_on_disk_is_refused_before_any_write(
    tmp_path, capsys, monkeypatch
):
    from collections import namedtuple

    from impresslearn.runtime import Runtime

    out = tmp_path / "big"
    argv = ["run", "quickstart-supsup", *TINY, "--set", "scenario.num_tasks=100000"]
    monkeypatch.setattr(Runtime, "available_memory", lambda self: 10**9)
    code, _, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert "100,000 tasks of supsup would hold about 26.6 GB (266,200 B per task)" in err
    assert "more than the 1.0 GB available" in err
    monkeypatch.setattr(Runtime, "available_memory", lambda self: 10**12)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(10**9, 0, 10**8))
    code, _, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert "100,000 tasks would write about 3.74 GB of checkpoint (37,371 B per task)" in err
    assert "0.10 GB free" in err

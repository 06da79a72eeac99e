"""--log tensorboard: event files in the run folder, read back with TensorBoard's own reader."""

import pytest

from impresslearn.cli import main

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY = [
    "--set",
    "scenario.dataset=mnist_embedded",
    "--set",
    "scenario.num_tasks=3",
    "--set",
    "train.iterations=120",
]


def test_run_writes_loss_accuracy_and_the_matrix_image(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "supsup-permuted-mnist",
            *TINY,
            "--out",
            str(out),
            "--quiet",
            "--log",
            "tensorboard",
        ]
    )
    assert code == 0, capsys.readouterr().err
    reader = event_accumulator.EventAccumulator(
        str(out / "tensorboard"), size_guidance={event_accumulator.IMAGES: 0}
    )
    reader.Reload()
    tags = reader.Tags()
    assert {
        "loss/task_0",
        "loss/task_2",
        "accuracy/new_task",
        "accuracy/average_seen",
        "final/average_accuracy",
        "final/forgetting",
    } <= set(tags["scalars"])
    assert tags["images"] == ["accuracy_matrix"]
    losses = reader.Scalars("loss/task_0")
    assert [e.step for e in losses] == [0, 50, 100, 119]
    assert losses[-1].value < losses[0].value  # it learned
    accuracy = reader.Scalars("accuracy/new_task")
    assert [e.step for e in accuracy] == [0, 1, 2] and all(e.value > 0.5 for e in accuracy)
    assert reader.Scalars("final/forgetting")[0].value == 0
    image = reader.Images("accuracy_matrix")[0]
    assert image.width > 100 and image.encoded_image_string.startswith(b"\x89PNG")


def test_log_without_a_run_folder_or_for_a_sweep_is_refused(tmp_path, capsys):
    code = main(
        [
            "run",
            "impress-sweep-rotated-mnist",
            "--set",
            "scenario.dataset=mnist_embedded",
            "--out",
            str(tmp_path / "s"),
            "--log",
            "tensorboard",
            "--quiet",
        ]
    )
    assert code == 2 and "not sweep experiments" in capsys.readouterr().err

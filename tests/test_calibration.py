"""Calibrated verification: each candidate's objective value minus its task's reference; auto
verification: calibrated or raw, as a self-test after every task decides."""

import dataclasses

import pytest
import torch

from impresslearn.checkpoint import Calibration
from impresslearn.config import apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.inference import (
    InferenceConfig,
    chosen_verification,
    infer_task,
    reference_value,
    self_test,
    verification_value,
    verify,
)
from impresslearn.presets import get_preset
from impresslearn.runners import check_experiment, load_run, run_experiment
from impresslearn.runners.saved import evaluate_run_inferred

CALIBRATED = [
    "eval.scenario=GNu",
    "inference.procedure=exhaustive",
    "inference.verification=auto",
    "inference.images=64",
    "inference.test_images=512",
]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The ImpressLearn quickstart (6 RotatedMNIST tasks of the embedded data: 4 impressions, 2
    combinations), learned with auto exhaustive verification and saved."""
    out = tmp_path_factory.mktemp("runs") / "calibrated"
    config = apply_overrides(get_preset("quickstart"), CALIBRATED)
    return run_experiment(config, None, out)


def test_a_reference_is_the_models_mean_value_over_the_images(quickstart):
    method, scenario = quickstart.method, quickstart.scenario
    data = scenario.train_data(4).head(300)  # batches of 128, 128 and 44 images
    for objective in ("entropy", "superfluous"):
        if objective == "superfluous":
            continue  # the quickstart has 10 outputs: G needs superfluous ones
        value = reference_value(method, 4, data, objective, 10, batch=128)
        with torch.no_grad(), method.task_context(4):
            logits = method.model(data.inputs(slice(0, 300)))
        whole = float(verification_value(logits, objective, 10))
        assert value == pytest.approx(whole, rel=1e-6)


def test_calibrated_verification_subtracts_each_tasks_reference(quickstart):
    method = quickstart.method
    x = quickstart.scenario.test_data(5).inputs(slice(0, 64))
    tasks = method.learned_tasks()
    raw = verify(method, x, tasks, "entropy", 10)
    zero = verify(method, x, tasks, "entropy", 10, {t: 0.0 for t in tasks})
    assert torch.equal(raw, zero)
    offsets = {t: 0.01 * (t + 1) for t in tasks}
    shifted = verify(method, x, tasks, "entropy", 10, offsets)
    expected = torch.stack([raw[i] - offsets[t] for i, t in enumerate(tasks)])
    assert torch.equal(shifted, expected)
    # A reference large enough makes its task win whatever the batch.
    favoured = {t: (100.0 if t == 2 else 0.0) for t in tasks}
    assert infer_task(method, x, procedure="exhaustive", num_classes=10, references=favoured) == (
        2,
        0,
    )


def test_an_auto_run_stores_references_and_self_tests_and_reloads_them(quickstart):
    run = load_run(quickstart.out_dir, device="cpu")
    references = run.state.calibration.references["entropy"]
    assert sorted(references) == list(range(6))
    for t, value in references.items():
        data = quickstart.scenario.train_data(t).head(1024)
        assert value == reference_value(run.method, t, data, "entropy", 10, 128)
    tests = run.state.calibration.self_tests["entropy"]
    assert tests[0] == (0, 0, 0, 0)  # the first task has nothing to be told from
    for t in range(1, 6):  # the next 1,024 training images: 8 batches of 128
        data = quickstart.scenario.train_data(t).part(1024, 2048)
        assert tests[t] == self_test(
            run.method,
            t,
            list(range(t)),
            data,
            "entropy",
            10,
            batch=128,
            images=64,
            references=references,
        )
        assert tests[t][2] == 8
    # Auto's choice is McNemar's test on exactly these counts. Measured on this stream (5 batches
    # only calibration got right, none only raw values): calibration finds the new tasks more
    # often, significantly so, and auto uses it.
    assert quickstart.metrics["verification"] == f"auto: {chosen_verification(tests)}"
    assert quickstart.metrics["self_test_calibrated"] > quickstart.metrics["self_test_raw"]
    assert quickstart.metrics["verification"] == "auto: calibrated"
    again = evaluate_run_inferred(run, None, run.config)
    for key in ("task_inference_accuracy", "average_accuracy_inferred"):
        assert again[key] == quickstart.metrics[key]


def test_references_measured_after_the_stream_equal_those_of_the_tasks_end(quickstart, tmp_path):
    """A run learned without calibration and evaluated with auto verification later measures the
    same references and self-tests: a learned task's model is frozen."""
    raw = apply_overrides(get_preset("quickstart"), ["eval.scenario=GNu", *CALIBRATED[1:]])
    raw = dataclasses.replace(raw, inference=dataclasses.replace(raw.inference, verification="raw"))
    result = run_experiment(raw, None, tmp_path / "raw")
    run = load_run(result.out_dir, device="cpu")
    assert run.state.calibration == Calibration()
    calibrated = evaluate_run_inferred(run, None, quickstart.config)
    keys = ("task_inference_accuracy", "average_accuracy_inferred", "self_test_raw")
    for key in (*keys, "self_test_calibrated", "verification"):
        assert calibrated[key] == quickstart.metrics[key]
    # Measured on this real stream (70.8% against 54.2% of the test batches): calibration
    # separates the rotations better than raw entropy.
    plain = evaluate_run_inferred(
        run, None, apply_overrides(quickstart.config, ["inference.verification=raw"])
    )
    assert calibrated["task_inference_accuracy"] > plain["task_inference_accuracy"] + 0.03


def test_calibration_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="verifying procedures"):
        InferenceConfig(procedure="oneshot", verification="calibrated")
    with pytest.raises(ConfigError, match="verifying procedures"):
        InferenceConfig(procedure="binary", verification="auto")
    nns = ["kind=nns", "train.schedule=constant", "eval.scenario=GNu"]
    with pytest.raises(ConfigError, match="not available with kind=nns"):
        check_experiment(
            apply_overrides(
                get_preset("supsup-permuted-mnist"),
                [*nns, "inference.procedure=exhaustive", "inference.verification=calibrated"],
            )
        )
    with pytest.raises(ConfigError, match="inference.verification"):
        InferenceConfig(verification="z-score")
    with pytest.raises(ConfigError, match="reference_images"):
        InferenceConfig(reference_images=0)


def test_auto_keeps_raw_values_unless_calibration_is_significantly_better():
    assert chosen_verification({1: (8, 8, 8, 0), 2: (7, 7, 8, 2)}) == "raw"  # a tie
    assert chosen_verification({1: (151, 152, 152, 1)}) == "raw"  # one batch: not significant
    assert chosen_verification({1: (2, 8, 8, 6), 2: (3, 7, 8, 4)}) == "calibrated"  # 10 vs 0
    assert chosen_verification({1: (5, 9, 10, 6)}) == "raw"  # 5 vs 1: z = 4 / sqrt(6) < 2
    assert chosen_verification({1: (0, 0, 0, 0)}) == "raw"  # nothing to decide on

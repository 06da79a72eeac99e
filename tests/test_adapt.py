"""Quick adaptation (kind ``adapt``): examples per class and optimiser steps against accuracy."""

import csv
import json

import pytest
import torch

from impresslearn.config import AdaptConfig, ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.runners import RunContext, build_stream, run_experiment
from impresslearn.runners import adapt as adapt_module
from impresslearn.runners import run as run_kind
from impresslearn.runners.adapt import backbone_features, examples_of, summarise
from impresslearn.runtime import Runtime

TINY = [
    "scenario.dataset=mnist_embedded",
    "scenario.name=rotated_mnist",
    "scenario.num_tasks=4",
    "method.name=impresslearn",
    "method.num_impressions=2",
    "method.impressions.iterations=30",
    "train.iterations=30",
    "train.lr=1e-2",
]
ADAPT = [
    *TINY,
    "kind=adapt",
    'adapt.representations=["layer","groups:2@int8"]',
    "adapt.examples_per_class=[1,5,0]",
    "adapt.steps=[1,10]",
    "adapt.repeats=2",
]


def config(*extra: str) -> ExperimentConfig:
    return apply_overrides(ExperimentConfig(), [*ADAPT, *extra])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "run"
    return run_kind(config(), RunContext.create(None, out)), out


def test_adapt_writes_every_point_and_its_figures(adapted):
    result, out = adapted
    rows = list(csv.DictReader((out / "adapt.csv").open()))
    contenders = ["layer", "groups:2@int8", "dedicated_mask", "linear_head"]
    # contenders x tasks x draws x examples counts x (steps 1, 10 and the last, 30)
    assert len(rows) == 4 * 2 * 2 * 3 * 3
    assert {r["contender"] for r in rows} == set(contenders)
    assert {r["examples_per_class"] for r in rows} == {"1", "5", "all"}
    assert {r["step"] for r in rows} == {"1", "10", "30"}
    every = round(result.metrics["all_examples_per_class"] * 10)
    counts = {(r["examples_per_class"], int(r["examples"])) for r in rows}
    assert counts == {("1", 10), ("5", 50), ("all", every)}
    assert (out / "adapt_examples.png").stat().st_size > 10_000
    assert (out / "adapt_steps.png").stat().st_size > 10_000
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["contenders"]) == contenders
    assert saved["bytes_per_task"]["layer"] == 3 * 2 * 4
    assert saved["bytes_per_task"]["dedicated_mask"] == sum(
        (n + 7) // 8 for n in (784 * 300, 300 * 100, 100 * 10)
    )
    assert saved["bytes_per_task"]["linear_head"] == 4 * (100 * 10 + 10) + 8 * 100
    for c in saved["contenders"].values():
        assert set(c["by_examples"]) == {"1", "5", "0"}
        assert set(c["by_steps"]) == {"1", "10", "30"}
        assert c["by_examples"]["0"] == c["by_steps"]["30"]
    # Every contender learns: with every example it ends well above chance (10%).
    assert all(saved["contenders"][c]["full_data_accuracy"] > 0.5 for c in contenders)


def test_the_last_point_with_every_example_is_what_a_run_gives(adapted):
    """With every example and the first draw, a combination trains on a run's own batches, and
    evaluating it along the way changes nothing: its last point equals a stream run's accuracy
    on that task, bit for bit."""
    result, _ = adapted
    run = run_experiment(apply_overrides(ExperimentConfig(), TINY), None)
    for t in (2, 3):
        (last,) = [
            r["accuracy"]
            for r in result.metrics["rows"]
            if r["contender"] == "layer"
            and r["task_id"] == t
            and r["examples_per_class"] == 0
            and r["repeat"] == 0
            and r["step"] == 30
        ]
        assert last == run.accuracy_matrix[-1, t]


def test_every_contender_gets_the_same_examples_and_batches(monkeypatch):
    seen: dict[str, list] = {}
    original = adapt_module.fit

    def recording_fit(params, loss, data, train, gen, **kwargs):
        contender = kwargs["description"].split(":")[0]
        seen.setdefault(contender, []).append((data.y.tolist(), gen.initial_seed()))
        return original(params, loss, data, train, gen, **kwargs)

    monkeypatch.setattr(adapt_module, "fit", recording_fit)
    run_kind(config("adapt.repeats=1", "adapt.eval_tasks=[2]"), RunContext.create(None, None))
    runs = list(seen.values())
    assert len(runs) == 4 and all(len(r) == 3 for r in runs)
    assert all(r == runs[0] for r in runs)
    labels = [y for y, _ in runs[0]]
    assert sorted(labels[0]) == list(range(10))  # one example of every class
    assert len(labels[1]) == 50 and len({seed for _, seed in runs[0]}) == 3


def test_examples_are_balanced_nested_and_seeded():
    shuffle = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat_interleave(30)[shuffle]
    one, five = examples_of(labels, 1, (0, 8, 1, 0)), examples_of(labels, 5, (0, 8, 1, 0))
    assert torch.bincount(labels[one]).tolist() == [1] * 10
    assert torch.bincount(labels[five]).tolist() == [5] * 10
    assert set(one.tolist()) <= set(five.tolist())
    assert torch.equal(five, examples_of(labels, 5, (0, 8, 1, 0)))
    assert not torch.equal(five, examples_of(labels, 5, (0, 8, 1, 1)))
    assert torch.equal(examples_of(labels, 0, (0,)), torch.arange(300))
    with pytest.raises(ConfigError, match="more than the 30 training examples of class"):
        examples_of(labels, 31, (0,))


def test_backbone_features_are_the_dense_random_networks():
    cfg = apply_overrides(ExperimentConfig(), TINY)
    stream = build_stream(cfg, None, Runtime.create("cpu"))
    data = stream.scenario.test_data(1).head(64)
    features = backbone_features(stream, data)
    first, second, _ = stream.model.layers
    x = data.inputs(slice(None)).flatten(1)
    expected = torch.relu(torch.relu(x @ first.weight.T) @ second.weight.T)
    assert features.shape == (64, 100)
    assert torch.allclose(features, expected, atol=1e-5)


def test_summary_finds_what_reaches_90_percent():
    rows = []
    for repeat, shift in ((0, 0.0), (1, 0.02)):
        for k, acc in ((1, 0.5), (5, 0.85), (0, 0.9)):
            rows.append(_row("c", k, repeat, 40, acc + shift))
        for step, acc in ((1, 0.3), (10, 0.82)):
            rows.append(_row("c", 0, repeat, step, acc + shift))
    s = summarise(rows, ["c"], (1, 5, 0), 40)["c"]
    assert s["by_examples"]["5"] == pytest.approx((0.86, 0.01))
    assert s["full_data_accuracy"] == pytest.approx(0.91)
    assert s["examples_per_class_to_90pct"] == 5  # 0.86 >= 0.9 * 0.91
    assert s["steps_to_90pct"] == 10


def _row(contender, k, repeat, step, accuracy):
    return {
        "contender": contender,
        "task_id": 1,
        "examples_per_class": k,
        "repeat": repeat,
        "step": step,
        "accuracy": accuracy,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["adapt.steps=[1,31]"], r"adapt.steps \[31\] lie beyond the 30 steps"),
        (["adapt.eval_tasks=[0,2]"], "adapt.eval_tasks must be tasks of the stream"),
        (["adapt.examples_per_class=[1,1]"], "repeats a value"),
        (['adapt.references=["probe"]'], "unknown entries"),
        (["adapt.repeats=0"], "adapt.repeats must be >= 1"),
        (['adapt.representations=["nope"]'], "nope"),
    ],
)
def test_adapt_refuses_what_it_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_kind(config(*overrides), RunContext.create(None, None))


def test_adapt_needs_impresslearn_and_its_own_kind():
    with pytest.raises(ConfigError, match="kind=adapt needs method.name=impresslearn"):
        run_kind(
            apply_overrides(ExperimentConfig(), ["kind=adapt", "scenario.dataset=mnist_embedded"]),
            RunContext.create(None, None),
        )
    with pytest.raises(ConfigError, match="read by experiments of kind adapt only"):
        run_kind(
            apply_overrides(ExperimentConfig(), [*TINY, "adapt.repeats=2"]),
            RunContext.create(None, None),
        )
    assert AdaptConfig().examples_per_class[-1] == 0


def test_repeats_over_seeds_summarise_every_contender(tmp_path):
    from impresslearn.runners import run_seeds

    cfg = config("adapt.repeats=1", "adapt.eval_tasks=[2]", 'adapt.references=["linear_head"]')
    record = run_seeds(cfg, RunContext.create(None, tmp_path / "seeds"), 2)
    summary = record.metrics["summary"]
    assert set(summary) >= {
        f"accuracy.{c}.k={k}" for c in ("layer", "linear_head") for k in (1, 5, 0)
    }
    assert len(summary["accuracy.layer.k=0"]["values"]) == 2

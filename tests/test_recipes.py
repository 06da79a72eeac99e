"""Experiment kinds as registered recipes over one run context (impresslearn.runners.recipes).

A new kind is registered through the public registration point only, then run by the Python API,
by the command line, and in repeats over seeds, as a user's own module would be.
"""

from __future__ import annotations

import json
import logging

import pytest

from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides, config_from_dict
from impresslearn.errors import ConfigError
from impresslearn.inference import PROCEDURE_TABLE, PROCEDURES
from impresslearn.methods import METHODS
from impresslearn.methods.base import CAPABILITY_HOOKS, Method
from impresslearn.presets import PRESETS, get_preset
from impresslearn.runners import (
    RECIPES,
    RunContext,
    RunResult,
    build_stream,
    check_experiment,
    register_recipe,
    run,
    run_seeds,
)
from impresslearn.runners.folder import started_folder
from impresslearn.storage import atomic_write_json

SHORT = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=3",
    "train.iterations=40",
    "train.lr=3e-3",
]


def check_transfer(config: ExperimentConfig) -> None:
    if config.eval.infers_tasks:
        raise ConfigError("kind=transfer evaluates with task ids given")


def transfer_table(metrics: dict) -> str:
    return "transfer: " + ", ".join(f"{100 * a:.1f}%" for a in metrics["accuracies"])


@pytest.fixture
def transfer_kind():
    """The file a user would add: a kind that learns task 0 alone and applies its model to every
    task of the stream (how far one mask carries), writing ``transfer.json``."""

    @register_recipe("transfer", check=check_transfer, report=transfer_table)
    def run_transfer(config: ExperimentConfig, ctx: RunContext) -> RunResult:
        """Task 0's model applied to every task of the stream."""
        stream = build_stream(config, ctx.data_root, ctx.runtime, progress=ctx.progress)
        stream.learn_task(0, config.train, "task 0")
        with stream.method.task_context(0):
            accuracies = [
                stream.accuracy(stream.scenario.test_data(t)) for t in range(stream.num_tasks)
            ]
        metrics = {"preset": config.name, "accuracies": accuracies}
        if ctx.out_dir is None:
            return RunResult(config, metrics)
        with started_folder(ctx.runtime, ctx.out_dir, config, overwrite=ctx.overwrite) as out:
            atomic_write_json(out / "transfer.json", metrics)
            atomic_write_json(out / "metrics.json", metrics)
        return RunResult(config, metrics, out)

    yield "transfer"
    RECIPES.unregister("transfer")


def test_a_new_experiment_kind_runs_through_the_api_the_cli_and_seeds(
    transfer_kind, tmp_path, capsys
):
    config = apply_overrides(ExperimentConfig(), [*SHORT, "kind=transfer"])
    assert config.kind == "transfer"
    result = run(config, RunContext.create(out_dir=tmp_path / "api", device="cpu"))
    accuracies = result.metrics["accuracies"]
    assert accuracies[0] > 0.6 and len(accuracies) == 3  # task 0 learned; chance is 0.1
    assert json.loads((tmp_path / "api" / "transfer.json").read_text())["accuracies"] == accuracies
    # The saved config replays through the command line, which prints the kind's report.
    capsys.readouterr()
    code = main(
        ["run", "--config", str(tmp_path / "api"), "--out", str(tmp_path / "cli"), "--quiet"]
    )
    assert code == 0
    assert "transfer: " in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["accuracies"] == accuracies
    # Repeats over seeds wrap it like any kind: repeat 0 is the plain run.
    ctx = RunContext.create(out_dir=tmp_path / "seeds", device="cpu")
    record = run_seeds(config, ctx, 2).metrics
    assert record["kind"] == "transfer" and record["num_seeds"] == 2
    assert (tmp_path / "seeds" / "seed-1" / "transfer.json").is_file()
    again = json.loads((tmp_path / "seeds" / "seed-0" / "metrics.json").read_text())
    assert again["accuracies"] == accuracies
    # Its check runs before anything is written; `impresslearn list` names it.
    with pytest.raises(ConfigError, match="kind=transfer evaluates"):
        run(apply_overrides(config, ["eval.scenario=GNu"]), RunContext.create(device="cpu"))
    assert main(["list"]) == 0
    assert "transfer   Task 0's model applied to every task" in capsys.readouterr().out


def test_an_unknown_kind_is_refused_with_the_known_ones():
    config = apply_overrides(ExperimentConfig(), ["kind=nosuch"])
    with pytest.raises(
        ConfigError, match="unknown experiment kind 'nosuch'; known: adapt, frontier"
    ):
        check_experiment(config)


def test_a_kind_refuses_what_its_context_cannot_do(tmp_path):
    sweep = get_preset("impress-sweep-rotated-mnist")
    with pytest.raises(ConfigError, match="cannot be resumed"):
        run(sweep, RunContext.create(out_dir=tmp_path, resume=True, device="cpu"))
    assert not any(tmp_path.iterdir())  # refused before anything was written
    with pytest.raises(ConfigError, match="kind=sweep needs method.name=impresslearn"):
        check_experiment(apply_overrides(sweep, ["method.name=supsup"]))
    with pytest.raises(ConfigError, match="kind=frontier needs the representations"):
        check_experiment(
            apply_overrides(ExperimentConfig(), ["kind=frontier", "method.name=impresslearn"])
        )


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_names_a_kind_its_recipe_accepts(name):
    config = get_preset(name)
    assert check_experiment(config).kind == config.kind
    assert config_from_dict(json.loads(config.to_json())) == config


# Configs saved before kinds and the inference section had names: what impresslearn 0.1 wrote
# into config.json and checkpoints for impress-nns-permuted-mnist (sections in the old layout).
OLD_NNS = {
    "name": "impress-nns-permuted-mnist",
    "scenario": {"name": "permuted_mnist", "dataset": "mnist", "num_tasks": 20},
    "backbone": {"name": "lenet_300_100", "num_outputs": 500},
    "method": {
        "name": "impresslearn",
        "num_impressions": 10,
        "granularity": "output_unit",
        "train_impression_tasks": True,
        "impression_optimizer": "rmsprop",
        "impression_lr": 3e-4,
        "impression_iterations": 3000,
        "impression_epochs": None,
        "impression_batch_size": 128,
        "impression_schedule": "cosine",
        "impression_weight_decay": 0.0,
    },
    "train": {"optimizer": "rmsprop", "lr": 1e-3, "iterations": 1000, "schedule": "constant"},
    "eval": {
        "scenario": "NNs",
        "inference": "binary",
        "objective": "entropy",
        "inference_images": 128,
        "nns_objective": "cross_entropy",
        "nns_threshold": 3.0,
    },
    "sweep": {"num_impressions": []},
    "frontier": {"representations": []},
}


def test_configs_of_the_old_layout_load_into_the_new_one():
    config = config_from_dict(OLD_NNS)
    assert config == get_preset("impress-nns-permuted-mnist")
    assert config.kind == "nns" and config.eval.scenario == "GNu"
    assert config.nns.threshold == 3.0 and config.inference.images == 128
    assert config.method.impressions.iterations == 3000
    old_sweep = {"method": {"name": "impresslearn"}, "sweep": {"num_impressions": [1, 2]}}
    assert config_from_dict(old_sweep).kind == "sweep"


def test_old_override_keys_are_applied_to_their_new_place_with_a_warning(caplog):
    base = get_preset("impress-rotated-mnist")
    with caplog.at_level(logging.WARNING, logger="impresslearn.config"):
        old = apply_overrides(
            base,
            ["eval.inference=binary", "method.impression_lr=1e-3", "eval.scenario=GNu"],
        )
    new = apply_overrides(
        base, ["inference.procedure=binary", "method.impressions.lr=1e-3", "eval.scenario=GNu"]
    )
    assert old == new
    assert "eval.inference is now inference.procedure" in caplog.text
    assert "method.impression_lr is now method.impressions.lr" in caplog.text
    with caplog.at_level(logging.WARNING, logger="impresslearn.config"):
        nns = apply_overrides(get_preset("supsup-permuted-mnist"), ["eval.scenario=NNs"])
    assert nns.kind == "nns" and "--set kind=nns" in caplog.text


def test_nested_overrides_are_checked_like_sections():
    base = get_preset("impress-rotated-mnist")
    config = apply_overrides(base, ["method.impressions.epochs=2"])
    assert config.method.impressions.epochs == 2
    assert config.method.impressions.iterations is None  # the exclusive field is cleared
    assert config.method.impressions.lr == base.method.impressions.lr  # the rest kept
    with pytest.raises(ConfigError, match="unknown override key 'method.impressions.lrr'"):
        apply_overrides(base, ["method.impressions.lrr=1"])
    with pytest.raises(ConfigError, match="method.impressions: train.lr must be > 0"):
        apply_overrides(base, ["method.impressions.lr=-1"])
    with pytest.raises(ConfigError, match="method.granularity is not a section"):
        apply_overrides(base, ["method.granularity.x=1"])
    # A nested section given in part takes the rest from its own defaults, not TrainConfig's.
    data = base.to_dict()
    data["method"]["impressions"] = {"lr": 1e-3}
    assert config_from_dict(data).method.impressions.iterations == 3000


def test_the_inference_table_names_every_procedure():
    assert tuple(PROCEDURE_TABLE) == PROCEDURES


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_writes_the_hooks_its_declared_supports_need(name):
    """Methods declare scenarios and procedures as data; a declaration obliges the method to the
    capability hooks that serve it (and nothing else asks which method it is)."""
    method = METHODS.get(name)
    assert method.scenarios <= {"GG", "GNs", "GNu", "NNs"} and "GG" in method.scenarios
    assert method.procedures <= set(PROCEDURES)
    for support, hooks in CAPABILITY_HOOKS.items():
        if support in method.scenarios or support in method.procedures:
            for hook in hooks:
                assert callable(getattr(method, hook, None)), f"{name} declares {support}"
                assert not hasattr(Method, hook)  # no default to fall back on

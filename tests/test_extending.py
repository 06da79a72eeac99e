"""docs/extending.md, proven: a new method, backbone, scenario, data set and preset, each added
through the public extension points only (the registries and base classes, as a user's own code
would), then run end to end by ``run_experiment`` on the embedded MNIST data.

Each test defines inline what would be one new file in the package (named in its docstring and in
docs/extending.md) and removes its registration afterwards, so the registries that other tests
are parametrised over stay as they were.
"""

from __future__ import annotations

import math
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from impresslearn import (
    BACKBONES,
    DATASETS,
    METHODS,
    PRESETS,
    SCENARIOS,
    ExperimentConfig,
    ImageData,
    ImageSplit,
    Method,
    ScenarioConfig,
    TaskData,
    apply_overrides,
    get_preset,
    infer_task,
    load_run,
    masked_layers,
    one_hot,
    register_dataset,
    register_preset,
    run_experiment,
    use_coeffs,
)
from impresslearn.cli import main
from impresslearn.data import list_datasets, load_dataset
from impresslearn.errors import ConfigError

SHORT = ["scenario.num_tasks=2", "train.iterations=60", "train.lr=3e-3"]


@pytest.fixture
def added():
    """Names a test registers, as ``(registry, name)``; unregistered after the test."""
    names: list[tuple[Any, str]] = []
    yield names
    for registry, name in names:
        registry.unregister(name)


def _quick_supsup(*overrides: str) -> ExperimentConfig:
    return apply_overrides(get_preset("quickstart-supsup"), [*SHORT, *overrides])


def test_a_new_method(tmp_path, added):
    """The file ``src/impresslearn/methods/mask_per_task.py``: a minimal one-mask-per-task method
    (SupSup without its options), the role's required members only, plus its checkpoint state."""
    added.append((METHODS, "mask_per_task"))

    @dataclass(frozen=True)
    class MaskPerTaskConfig:
        name: str = "mask_per_task"
        density: float = 0.5
        seed: int = 0  # shifted by --seeds

    @METHODS.register("mask_per_task")
    class MaskPerTask(Method):
        """One top-k mask per task, learned from scores, stored in every layer's bank."""

        name = "mask_per_task"
        config_class = MaskPerTaskConfig

        def __init__(self, model: nn.Module, config: MaskPerTaskConfig) -> None:
            self.model, self.config = model, config
            self.layers = masked_layers(model)
            self.tasks: list[int] = []  # bank index -> task id
            self.scores: list[nn.Parameter] = []

        def begin_task(self, task_id: int) -> None:
            self.scores = [
                layer.begin_scores(
                    self.config.density,
                    "topk",
                    torch.Generator().manual_seed(self.config.seed * 1000 + task_id * 10 + i),
                )
                for i, layer in enumerate(self.layers)
            ]

        def training_context(self) -> AbstractContextManager[None]:
            return nullcontext()  # no coeffs set: the layers use the scores being learned

        def trainable_parameters(self) -> list[nn.Parameter]:
            return self.scores

        def end_task(self, task_id: int) -> None:
            for layer in self.layers:
                layer.add_to_bank(layer.end_scores())
            self.tasks.append(task_id)
            self.scores = []

        def task_context(self, task_id: int) -> AbstractContextManager[None]:
            index = self.tasks.index(task_id)
            return use_coeffs(self.model, one_hot(index, len(self.tasks), self.device))

        def learned_tasks(self) -> list[int]:
            return list(self.tasks)

        def mixed_coeffs(self, beta: Tensor) -> Tensor:
            return beta  # the superposition of the stored masks, weighted by beta

        def bytes_per_task(self) -> dict[str, int]:
            mask = sum((layer.weight.numel() + 7) // 8 for layer in self.layers)
            return {"mask": mask, "coeffs": 0, "norm_stats": 0}

        def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
            return {}, {"tasks": self.tasks}

        def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
            self.tasks = list(meta["tasks"])

    config = _quick_supsup("method.name=mask_per_task")
    assert isinstance(config.method, MaskPerTaskConfig)
    result = run_experiment(config, None, tmp_path / "run")
    m = result.metrics
    assert m["method"] == "mask_per_task" and m["forgetting"] == 0.0
    assert m["average_accuracy"] > 0.6  # chance is 0.1
    assert m["bytes_per_task"]["mask"] == 33_275  # LeNet-300-100 at 1 bit per weight
    # The saved run reloads (banks and the method's state), bit for bit.
    x = result.scenario.test_data(1).prepared()[:64]
    with torch.no_grad(), result.method.task_context(1):
        expected = result.method.model(x)
    assert torch.equal(load_run(tmp_path / "run").logits(x, 1), expected)
    # Task inference works through mixed_coeffs; entropy_fit and NNs need hooks it lacks, and
    # are refused when the config is built, naming the method.
    assert infer_task(result.method, x, procedure="binary", num_classes=10)[0] in (0, 1)
    with pytest.raises(ConfigError, match="mask_per_task"):
        apply_overrides(config, ["eval.scenario=GNu", "inference.procedure=entropy_fit"])
    with pytest.raises(ConfigError, match="mask_per_task"):
        apply_overrides(config, ["kind=nns", "train.schedule=constant"])


def test_a_new_backbone(added):
    """The file ``src/impresslearn/backbones/tiny_mlp.py`` (plus its import in
    ``backbones/__init__.py``): one hidden layer of 64 units, built from the layer class passed
    in, so it is masked in a run and dense for a baseline. Run with ImpressLearn (impressions,
    alphas and dedicated masks) and with SupSup."""
    added.append((BACKBONES, "tiny_mlp"))

    @BACKBONES.register("tiny_mlp")
    def tiny_mlp(input_shape, num_outputs, *, linear_layer, conv_layer, norm_layer):
        return nn.Sequential(
            nn.Flatten(),
            linear_layer(math.prod(input_shape), 64, layer_index=0),
            nn.ReLU(),
            linear_layer(64, num_outputs, layer_index=1),
        )

    config = apply_overrides(
        get_preset("quickstart"),
        [
            "backbone.name=tiny_mlp",
            "scenario.num_tasks=3",
            "method.num_impressions=2",
            "method.impressions.iterations=60",
            "train.iterations=30",
        ],
    )
    m = run_experiment(config, None).metrics
    assert m["backbone"] == "tiny_mlp" and m["forgetting"] == 0.0
    assert m["bytes_per_mask"] == (784 * 64 + 7) // 8 + (64 * 10 + 7) // 8
    # alphas per output unit: (64 + 10) units x 2 impressions x float32
    assert m["bytes_per_task"]["coeffs"] == (64 + 10) * 2 * 4
    assert m["unseen_tasks"] == [2] and 0.0 < m["average_accuracy_unseen"] <= 1.0
    supsup = run_experiment(_quick_supsup("backbone.name=tiny_mlp"), None).metrics
    assert supsup["average_accuracy"] > 0.6


def test_a_new_scenario(added):
    """The file ``src/impresslearn/scenarios/shifted.py`` (plus its import in
    ``scenarios/__init__.py``): task i shifts every image i pixels to the right (cyclically),
    over any single-channel data set."""
    added.append((SCENARIOS, "shifted_mnist"))

    @SCENARIOS.register("shifted_mnist")
    class ShiftedMNIST:
        def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
            self.config, self.data = config, data
            self.num_tasks = config.num_tasks
            self.input_shape = (1, *data.train.images.shape[1:])
            self.num_classes = data.num_classes

        def task_name(self, task_id: int) -> str:
            return f"shift {task_id} px"

        def _task(self, task_id: int, split: ImageSplit) -> TaskData:
            mean, std = self.data.mean[0], self.data.std[0]

            def prepare(batch: Tensor) -> Tensor:  # uint8 (B, H, W) -> float (B, 1, H, W)
                shifted = torch.roll(batch, shifts=task_id, dims=2)
                return shifted.float().div(255.0).sub(mean).div(std).unsqueeze(1)

            return TaskData(split.images, split.labels, prepare)

        def train_data(self, task_id: int) -> TaskData:
            return self._task(task_id, self.data.train)

        def test_data(self, task_id: int) -> TaskData:
            return self._task(task_id, self.data.test)

    result = run_experiment(_quick_supsup("scenario.name=shifted_mnist"), None)
    m = result.metrics
    assert m["scenario"] == "shifted_mnist" and m["task_names"] == ["shift 0 px", "shift 1 px"]
    assert m["forgetting"] == 0.0 and m["average_accuracy"] > 0.6
    shifted = result.scenario.test_data(1).prepared()
    assert torch.equal(shifted, torch.roll(result.scenario.test_data(0).prepared(), 1, dims=3))


def test_a_new_data_set(added):
    """The loader ``src/impresslearn/data/mnist_14px.py`` plus its ``register_dataset`` line in
    ``data/datasets.py``: the embedded MNIST images average-pooled to 14 x 14, a user's own
    tensors as an :class:`ImageData` (uint8 images, int64 labels, mean and std)."""
    added.append((DATASETS, "mnist_14px"))

    @register_dataset("mnist_14px")
    def load_mnist_14px(root, system_dirs) -> ImageData:
        full = load_dataset("mnist_embedded", root)

        def shrink(split: ImageSplit) -> ImageSplit:
            pooled = F.avg_pool2d(split.images[:, None].float(), 2)[:, 0]
            return ImageSplit(pooled.round().to(torch.uint8), split.labels)

        return ImageData(
            "mnist_14px", shrink(full.train), shrink(full.test), 10, full.mean, full.std
        )

    assert "mnist_14px" in list_datasets()
    result = run_experiment(_quick_supsup("scenario.dataset=mnist_14px"), None)
    m = result.metrics
    assert result.scenario.input_shape == (1, 14, 14)
    assert m["dataset"] == "mnist_14px" and m["forgetting"] == 0.0
    assert m["bytes_per_task"]["mask"] == (196 * 300 + 300 * 100 + 100 * 10) // 8
    assert m["average_accuracy"] > 0.6


def test_a_new_preset(added, capsys):
    """A preset is a function registered in ``src/impresslearn/presets.py``; its config is named
    after the registration."""
    added.append((PRESETS, "my-quickstart"))

    @register_preset("my-quickstart")
    def my_quickstart() -> ExperimentConfig:
        """SupSup on 2 shorter tasks of the embedded data."""
        return _quick_supsup()

    assert get_preset("my-quickstart").name == "my-quickstart" == my_quickstart().name
    assert main(["list"]) == 0
    assert re.search(r"my-quickstart +SupSup on 2 shorter tasks", capsys.readouterr().out)


def test_registries_refuse_a_taken_name_and_unknown_names():
    with pytest.raises(ValueError, match="registered twice"):
        METHODS.register("supsup")(object)
    with pytest.raises(ValueError, match="folder:"):
        register_dataset("folder:x", lambda root, dirs: None)
    with pytest.raises(ConfigError, match="unknown data set 'nope'.*folder:PATH"):
        load_dataset("nope", None)
    with pytest.raises(ConfigError, match="is not registered"):
        BACKBONES.unregister("nope")

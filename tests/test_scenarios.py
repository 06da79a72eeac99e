"""Tests for impresslearn.scenarios over the real MNIST images shipped in the package
(``mnist_embedded``: 8,000 train and 2,000 test images)."""

import numpy as np
import pytest
import torch

from impresslearn.data import ImageData, load_dataset
from impresslearn.errors import ConfigError
from impresslearn.scenarios import SCENARIOS, ScenarioConfig, build_scenario
from impresslearn.scenarios.base import normalise
from impresslearn.scenarios.mnist import rotate

NUM_TASKS = 3


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_dataset("mnist_embedded", None)


def config(name: str, **kwargs) -> ScenarioConfig:
    kwargs.setdefault("num_tasks", NUM_TASKS)
    return ScenarioConfig(name=name, dataset="mnist_embedded", **kwargs)


def normalised(mnist: ImageData, split: str) -> torch.Tensor:
    part = mnist.train if split == "train" else mnist.test
    return normalise(part.images, mnist.mean, mnist.std)  # (N, 1, 28, 28)


# ------------------------------------------------------------------------ every scenario


COLOUR = {"split_cifar100", "split_images", "cifar100_superclass"}  # built from CIFAR-100


@pytest.fixture(params=SCENARIOS.names())
def name(request) -> str:
    return request.param


@pytest.fixture
def data(name, mnist, request) -> ImageData:
    """The real data set the scenario ``name`` is built from."""
    return request.getfixturevalue("cifar") if name in COLOUR else mnist


@pytest.fixture(scope="module")
def cifar(shared_data_root) -> ImageData:
    return load_dataset("cifar100", shared_data_root)


def stream(name: str, data: ImageData, **kwargs):
    kwargs.setdefault("num_tasks", NUM_TASKS)
    return build_scenario(ScenarioConfig(name=name, dataset=data.name, **kwargs), data)


def test_scenario_built_twice_is_identical(data, name):
    first = stream(name, data, seed=5)
    second = stream(name, data, seed=5)
    for task_id in range(NUM_TASKS):
        for split in ("train_data", "test_data"):
            a, b = getattr(first, split)(task_id), getattr(second, split)(task_id)
            assert torch.equal(a.prepared(), b.prepared())
            assert torch.equal(a.y, b.y)
        assert first.task_name(task_id) == second.task_name(task_id)


def test_scenario_tasks_are_well_formed_and_distinct(data, name):
    scenario = stream(name, data)
    assert scenario.num_tasks == NUM_TASKS
    assert scenario.input_shape == ((3, 32, 32) if name in COLOUR else (1, 28, 28))
    previous = None
    for task_id in range(NUM_TASKS):
        task = scenario.test_data(task_id)
        assert task.prepared().dtype == torch.float32
        assert task.y.dtype == torch.int64
        assert task.prepared().shape == (len(task.y), *scenario.input_shape)
        assert len(task) > 0
        assert set(task.y.unique().tolist()) == set(range(scenario.num_classes))
        if previous is not None:
            assert task.prepared().shape != previous.shape or not torch.equal(
                task.prepared(), previous
            )
        previous = task.prepared()
    names = [scenario.task_name(t) for t in range(NUM_TASKS)]
    assert len(set(names)) == NUM_TASKS


def test_scenario_never_touches_the_global_rng(data, name):
    state = torch.random.get_rng_state()
    scenario = stream(name, data)
    scenario.train_data(1)
    scenario.test_data(2)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("task_id", [-1, NUM_TASKS, NUM_TASKS + 10])
def test_task_id_out_of_range_raises_index_error(data, name, task_id):
    scenario = stream(name, data)
    with pytest.raises(IndexError):
        scenario.train_data(task_id)
    with pytest.raises(IndexError):
        scenario.test_data(task_id)


@pytest.mark.parametrize("kwargs", [{"num_tasks": 0}, {"seed": -1}])
def test_scenario_config_validation(kwargs):
    with pytest.raises(ConfigError):
        ScenarioConfig(**kwargs)


def test_unknown_scenario_is_a_config_error(mnist):
    with pytest.raises(ConfigError, match="permuted_mnist"):
        build_scenario(config("shuffled_mnist"), mnist)


# ---------------------------------------------------------------------------- permuted


def test_permutations_are_true_permutations_and_undoing_them_recovers_the_images(mnist):
    scenario = build_scenario(config("permuted_mnist"), mnist)
    for split in ("train", "test"):
        reference = normalised(mnist, split).flatten(1)
        labels = (mnist.train if split == "train" else mnist.test).labels
        for task_id in range(NUM_TASKS):
            perm = scenario.permutation(task_id)
            assert torch.equal(torch.sort(perm).values, torch.arange(784))
            assert not torch.equal(perm, torch.arange(784))
            task = scenario.train_data(task_id) if split == "train" else scenario.test_data(task_id)
            assert torch.equal(task.prepared().flatten(1), reference[:, perm])
            assert torch.equal(task.prepared().flatten(1)[:, torch.argsort(perm)], reference)
            assert torch.equal(task.y, labels)


def test_permutations_differ_between_tasks_and_scenario_seeds(mnist):
    seed0 = build_scenario(config("permuted_mnist", seed=0), mnist)
    seed0_again = build_scenario(config("permuted_mnist", seed=0), mnist)
    seed1 = build_scenario(config("permuted_mnist", seed=1), mnist)
    assert not torch.equal(seed0.permutation(0), seed0.permutation(1))
    for task_id in range(NUM_TASKS):
        assert torch.equal(seed0.permutation(task_id), seed0_again.permutation(task_id))
        assert not torch.equal(seed0.permutation(task_id), seed1.permutation(task_id))
        assert not torch.equal(
            seed0.test_data(task_id).prepared(), seed1.test_data(task_id).prepared()
        )


def test_permutation_of_a_task_does_not_depend_on_the_number_of_tasks(mnist):
    short = build_scenario(config("permuted_mnist", num_tasks=2), mnist)
    long = build_scenario(config("permuted_mnist", num_tasks=50), mnist)
    assert torch.equal(short.permutation(1), long.permutation(1))


# ----------------------------------------------------------------------------- rotated


def test_rotated_task_zero_is_the_unrotated_normalised_data(mnist):
    scenario = build_scenario(config("rotated_mnist", rotation_step=10.0), mnist)
    for split in ("train", "test"):
        task = scenario.train_data(0) if split == "train" else scenario.test_data(0)
        assert torch.equal(task.prepared(), normalised(mnist, split))
        assert torch.equal(task.y, (mnist.train if split == "train" else mnist.test).labels)


def test_rotated_task_zero_is_normalised_in_the_mnist_sense(mnist):
    # MNIST's mean/std (0.1307/0.3081) are those of its 60,000 training images; the 8,000
    # embedded training images normalise to mean ~0 and std ~1 with them.
    x = build_scenario(config("rotated_mnist"), mnist).train_data(0).prepared()
    assert abs(x.mean().item()) < 0.05
    assert x.std().item() == pytest.approx(1.0, abs=0.05)


def test_rotated_tasks_rotate_by_multiples_of_the_step(mnist):
    """With a 90 degree step, tasks 1, 2 and 3 are quarter turns of the normalised images.

    The direction is pinned by the test below; this one checks that tasks 1 and 3 are opposite
    quarter turns and task 2 a half turn. Bilinear sampling at cos(90 deg) = 6e-17 rather than 0 leaves differences
    of about 1e-5, hence the 1e-4 tolerance.
    """
    scenario = build_scenario(config("rotated_mnist", num_tasks=4, rotation_step=90.0), mnist)
    reference = normalised(mnist, "test")
    quarter = scenario.test_data(1).prepared()
    error = {
        k: (quarter - torch.rot90(reference, k, dims=(2, 3))).abs().max().item() for k in (1, -1)
    }
    k = min(error, key=error.get)
    close = {"rtol": 0.0, "atol": 1e-4}
    torch.testing.assert_close(quarter, torch.rot90(reference, k, dims=(2, 3)), **close)
    torch.testing.assert_close(
        scenario.test_data(2).prepared(), torch.rot90(reference, 2, dims=(2, 3)), **close
    )
    torch.testing.assert_close(
        scenario.test_data(3).prepared(), torch.rot90(reference, -k, dims=(2, 3)), **close
    )


def test_positive_angles_rotate_counter_clockwise_as_documented(mnist):
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 3] = 1.0  # top-right pixel
    # Counter-clockwise on screen: the top-right corner moves to the top-left.
    assert rotate(image, 90.0)[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-5)
    scenario = build_scenario(config("rotated_mnist", num_tasks=2, rotation_step=90.0), mnist)
    torch.testing.assert_close(
        scenario.test_data(1).prepared(),
        torch.rot90(normalised(mnist, "test"), 1, dims=(2, 3)),
        rtol=0.0,
        atol=1e-4,
    )


def test_rotation_uncovers_background_not_zero(mnist):
    """Corners uncovered by a 45 degree turn are background pixels (0 before normalising)."""
    scenario = build_scenario(config("rotated_mnist", num_tasks=2, rotation_step=45.0), mnist)
    x = scenario.test_data(1).prepared()
    background = (0.0 - mnist.mean[0]) / mnist.std[0]
    torch.testing.assert_close(x[:, 0, 0, 0], torch.full((len(x),), background))


# ------------------------------------------------------------------------------- split


def test_split_tasks_hold_two_consecutive_digits_relabelled(mnist):
    scenario = build_scenario(config("split_mnist", num_tasks=5), mnist)
    assert scenario.num_classes == 2
    for split in ("train", "test"):
        part = mnist.train if split == "train" else mnist.test
        reference = normalised(mnist, split)
        total = 0
        for task_id in range(5):
            task = scenario.train_data(task_id) if split == "train" else scenario.test_data(task_id)
            keep = (part.labels == 2 * task_id) | (part.labels == 2 * task_id + 1)
            assert torch.equal(task.y, part.labels[keep] - 2 * task_id)
            assert set(task.y.tolist()) == {0, 1}
            assert torch.equal(task.prepared(), reference[keep])
            total += len(task)
        assert total == len(part)


def test_split_mnist_has_at_most_five_tasks(mnist):
    with pytest.raises(ConfigError, match="at most 5"):
        build_scenario(config("split_mnist", num_tasks=6), mnist)


def test_cifar100_superclass_tasks_are_the_data_sets_own_superclasses(shared_data_root):
    """Task i holds the 5 fine classes whose coarse label (read from the files) is i."""
    from impresslearn.data import load_cifar100
    from impresslearn.scenarios import ScenarioConfig, build_scenario
    from impresslearn.scenarios.split import CIFAR100_COARSE

    with np.load(shared_data_root / "cifar100" / "cifar100-test.npz") as archive:
        fine, coarse = archive["y"].astype(int), archive["y_coarse"].astype(int)
    assert [int(c) for c in CIFAR100_COARSE] == [int(coarse[fine == f][0]) for f in range(100)]
    data = load_cifar100(shared_data_root)
    scenario = build_scenario(
        ScenarioConfig(name="cifar100_superclass", dataset="cifar100", num_tasks=20), data
    )
    seen = set()
    for t in range(20):
        classes = scenario.classes(t)
        assert len(classes) == 5 and classes == sorted(classes)
        assert {int(coarse[fine == f][0]) for f in classes} == {t}
        seen |= set(classes)
        test = scenario.test_data(t)
        assert len(test) == 500 and sorted(set(test.y.tolist())) == [0, 1, 2, 3, 4]
    assert seen == set(range(100))

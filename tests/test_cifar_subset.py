"""cifar100_subset: the classes of the first SplitCIFAR100 tasks, giving exactly those tasks."""

import pytest
import torch

from impresslearn.data import load_dataset
from impresslearn.data.cifar_subset import SUBSET_FILE, SUBSET_FOLDER, write_cifar100_subset
from impresslearn.errors import ConfigError, DataError
from impresslearn.scenarios import ScenarioConfig, build_scenario


def test_a_subset_gives_the_same_tasks_and_refuses_the_others(shared_data_root, tmp_path):
    full = load_dataset("cifar100", shared_data_root)
    config = ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20)
    whole = build_scenario(config, full)
    write_cifar100_subset(full, whole.classes(0), tmp_path / SUBSET_FOLDER / SUBSET_FILE)
    subset = load_dataset("cifar100_subset", tmp_path)
    one = ScenarioConfig(name="split_cifar100", dataset="cifar100_subset", num_tasks=1)
    part = build_scenario(one, subset)
    for split in ("train_data", "test_data"):
        a, b = getattr(part, split)(0), getattr(whole, split)(0)
        assert torch.equal(a.prepared(), b.prepared()) and torch.equal(a.y, b.y)
    with pytest.raises(ConfigError, match="set scenario.num_tasks=1 or less"):
        build_scenario(
            ScenarioConfig(name="split_cifar100", dataset="cifar100_subset", num_tasks=2), subset
        )


def test_a_missing_or_corrupt_subset_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-100 subset found"):
        load_dataset("cifar100_subset", tmp_path)
    (tmp_path / SUBSET_FOLDER).mkdir()
    (tmp_path / SUBSET_FOLDER / SUBSET_FILE).write_bytes(b"not an npz")
    with pytest.raises(DataError, match="write it again"):
        load_dataset("cifar100_subset", tmp_path)

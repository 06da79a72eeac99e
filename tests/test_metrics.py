"""Tests for impresslearn.metrics on small accuracy matrices worked out by hand.

``R[i, j]`` = accuracy on task j after training task i; NaN above the diagonal (not yet seen).
"""

import math

import numpy as np
import pytest

from impresslearn.metrics import (
    AccuracyMatrix,
    average_accuracy,
    backward_transfer,
    forgetting,
    matrix_to_csv,
)

NAN = float("nan")

# Task 0 drops from 0.9 to 0.8 after task 1.
TWO = np.array([[0.9, NAN], [0.8, 0.95]])

# Task 0: 0.6 -> 0.95 -> 0.7 (its best is after task 1, not on the diagonal);
# task 1: 0.8 -> 0.85 (improves); task 2: 0.5.
THREE = np.array([[0.6, NAN, NAN], [0.95, 0.8, NAN], [0.7, 0.85, 0.5]])


def test_two_task_matrix_by_hand():
    assert average_accuracy(TWO) == pytest.approx((0.8 + 0.95) / 2)  # 0.875
    assert backward_transfer(TWO) == pytest.approx(0.8 - 0.9)  # -0.1
    assert forgetting(TWO) == pytest.approx(0.9 - 0.8)  # 0.1


def test_three_task_matrix_by_hand():
    assert average_accuracy(THREE) == pytest.approx((0.7 + 0.85 + 0.5) / 3)
    # BWT = mean(R[2,0] - R[0,0], R[2,1] - R[1,1]) = mean(0.1, 0.05) = 0.075
    assert backward_transfer(THREE) == pytest.approx(0.075)
    # Forgetting = mean(max(0.6, 0.95) - 0.7, max(0.8) - 0.85) = mean(0.25, -0.05) = 0.1
    assert forgetting(THREE) == pytest.approx(0.1)


def test_no_forgetting_when_columns_stay_constant():
    """What SupSup and ImpressLearn guarantee: each task keeps its accuracy exactly."""
    r = np.array([[0.9, NAN, NAN], [0.9, 0.8, NAN], [0.9, 0.8, 0.85]])
    assert backward_transfer(r) == 0.0
    assert forgetting(r) == 0.0
    assert average_accuracy(r) == pytest.approx(2.55 / 3)


def test_single_task_has_zero_transfer_and_forgetting():
    r = np.array([[0.7]])
    assert average_accuracy(r) == pytest.approx(0.7)
    assert backward_transfer(r) == 0.0
    assert forgetting(r) == 0.0


def test_metrics_accept_nested_lists():
    r = [[0.9, NAN], [0.8, 0.95]]
    assert backward_transfer(r) == pytest.approx(-0.1)
    assert not math.isnan(forgetting(r))


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3)])
def test_metrics_reject_non_square_or_empty_matrices(bad):
    for metric in (average_accuracy, backward_transfer, forgetting):
        with pytest.raises(ValueError, match="square"):
            metric(bad)


def test_the_sparse_matrix_keeps_the_evaluated_entries_and_round_trips_through_json():
    r = AccuracyMatrix.from_dense(THREE)
    assert r.num_entries == 6 and r.rows == [0, 1, 2]
    assert r[1, 0] == 0.95 and math.isnan(r[0, 1])
    np.testing.assert_array_equal(r.dense(), THREE)
    obj = r.to_json()
    assert obj == {
        "num_tasks": 3,
        "after_task": [0, 1, 1, 2, 2, 2],
        "task": [0, 0, 1, 0, 1, 2],
        "accuracy": [0.6, 0.95, 0.8, 0.7, 0.85, 0.5],
    }
    assert AccuracyMatrix.from_json(obj) == r
    # the dense lists of earlier metrics.json files, None where not evaluated
    assert AccuracyMatrix.from_json([[0.6, None, None], [0.95, 0.8, None], [0.7, 0.85, 0.5]]) == r
    with pytest.raises(ValueError, match="tasks 0..1"):
        r.set_row(1, [2], [0.5])


def test_sparse_metrics_equal_the_dense_ones_on_random_partial_matrices():
    rng = np.random.default_rng(0)
    for t in (2, 5, 30):
        dense = np.tril(rng.random((t, t)))
        dense[np.triu_indices(t, 1)] = NAN
        keep = rng.random((t, t)) < 0.3  # a sampled stream: some entries off the diagonal only
        keep[np.diag_indices(t)] = True
        keep[-1] = True  # the final row is complete
        dense[~keep] = NAN
        sparse = AccuracyMatrix.from_dense(dense)
        final, diag = dense[-1], np.diag(dense)
        assert average_accuracy(sparse) == pytest.approx(final.mean())
        assert backward_transfer(sparse) == pytest.approx(np.mean(final[:-1] - diag[:-1]))
        by_hand = np.mean([np.nanmax(dense[j : t - 1, j]) - final[j] for j in range(t - 1)])
        assert forgetting(sparse) == pytest.approx(by_hand)


def test_matrix_to_csv_has_one_line_per_evaluated_entry():
    assert matrix_to_csv(TWO) == (
        "after_task,task,task_name,accuracy\n0,0,task_0,0.900000\n1,0,task_0,0.800000\n"
        "1,1,task_1,0.950000\n"
    )
    assert matrix_to_csv(TWO, ["perm 0", "perm 1"]).splitlines()[1] == "0,0,perm 0,0.900000"

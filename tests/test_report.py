"""Readable run summaries: the task-inference rows appear when the metrics hold them."""

from impresslearn.report import margin_text, summary_table

BASE = {
    "preset": "p",
    "method": "supsup",
    "scenario": "permuted_mnist",
    "dataset": "mnist",
    "backbone": "lenet_300_100",
    "num_tasks": 2,
    "average_accuracy": 0.95,
    "backward_transfer": 0.0,
    "forgetting": 0.0,
    "bytes_per_task": {"total": 100, "mask": 100, "coeffs": 0, "norm_stats": 0},
    "seconds_per_task": 1.0,
    "peak_memory_mb": 10.0,
    "final_accuracies": [0.95, 0.95],
}


def test_summary_shows_inference_margins_and_fitted_alphas_only_when_measured():
    plain = summary_table(BASE)
    assert "one-shot margin" not in plain and "fitted alphas" not in plain
    metrics = {
        **BASE,
        "eval_scenario": "GNu",
        "average_accuracy_inferred": 0.9,
        "task_inference_accuracy": 0.95,
        "task_inference_margin_median": 9.5,
        "task_inference_margin_p5": 4.25,
        "average_accuracy_fitted_alphas": 0.375,
    }
    table = summary_table(metrics)
    assert "90.00% with the task inferred (task inference 95.00%)" in table
    assert "median 9.50, 95% of inferences above 4.25" in table
    assert margin_text(metrics) in table
    assert "37.50% (classifying with the alphas fitted)" in table

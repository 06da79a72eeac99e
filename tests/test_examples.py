"""examples/: the scripts run as a user runs them, with tiny sizes."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_model_example_runs_supsup_impresslearn_and_task_inference(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "own_model.py"),
            "--steps",
            "40",
            "--train-size",
            "2000",
            "--test-size",
            "400",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout

    def percents(label: str) -> list[list[float]]:
        lines = re.findall(rf"^{re.escape(label)}.*$", out, re.M)
        return [[float(v) for v in re.findall(r"([\d.]+)%", line)] for line in lines]

    [supsup] = percents("SupSup: accuracy")
    [impress] = percents("ImpressLearn: accuracy")
    assert len(supsup) == len(impress) == 4
    assert min(supsup) > 30.0  # chance is 10%
    # ImpressLearn's impression tasks use SupSup's own masks of the same frozen weights
    assert impress[:3] == supsup[:3]
    inferred = percents("  task inferred right")
    assert len(inferred) == 2 and all(len(row) == 4 for row in inferred)
    assert re.search(r"^task 3: combination [\d.]+%, SupSup's own mask", out, re.M)
    assert re.search(r"^bytes per task: SupSup mask 19,850, ImpressLearn alphas 2,520$", out, re.M)

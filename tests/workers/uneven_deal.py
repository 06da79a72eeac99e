"""Worker of tests/test_distributed.py, launched by torchrun: dealt work of very uneven length.

The process group's timeout is 2 seconds; rank 0's job sleeps 6, so rank 1, done at once, waits
three timeouts for it in the gather of ``Runtime.deal``. Writes OUT/rank-R.txt with what it got.
"""

import sys
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from impresslearn.runtime import Runtime


def work(job: int) -> int:
    if job == 0:
        time.sleep(6)
    return 10 * job


if __name__ == "__main__":
    dist.init_process_group("gloo", timeout=timedelta(seconds=2))
    runtime = Runtime.create("cpu")
    done = runtime.deal([0, 1, 2, 3], work)
    Path(sys.argv[1], f"rank-{runtime.rank}.txt").write_text(repr(done))
    dist.destroy_process_group()

"""Test-session settings.

One intra-op thread: the tests run many tiny tensor operations, for which thread start-up and
contention on a busy 2-core machine cost 50-100x the work itself. Set before torch is imported so
that subprocesses started by the tests (DDP, signals) inherit it, which also keeps their floating
point identical to the parent's (bitwise resume comparisons need the same thread count).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

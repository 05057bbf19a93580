"""debias_pipeline: learning true user preference from biased implicit feedback."""

import os

# Idle OpenMP threads of PyTorch's CPU kernels spin 300,000 times (milliseconds) before
# they sleep. On a machine whose cores other jobs share, a spinning thread takes the core
# from the thread the parallel region waits for, and a LightGCN mini-batch step, a few
# dozen parallel operations, slowed 4-12x (benchmarks/peers.py --load). A short spin costs
# about a tenth of the quiet speed of that step (60 -> 66 ms) and keeps its slowdown under
# load near the share of the cores left (2x with one busy process per core). Read when PyTorch loads its OpenMP runtime, so it takes effect only when this
# package is imported before torch (as under `kedro run`); an explicit GOMP_SPINCOUNT or
# OMP_WAIT_POLICY is left alone.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "2000")

__version__ = "0.1.0"

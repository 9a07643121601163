"""Where sweep points are computed, behind one interface (:class:`Executor`): this process,
a local process pool (``--jobs N``) or Dask distributed (``--cluster``). Executors compute;
the sweep client commits each returned record to the store (the single writer)."""

from __future__ import annotations

import numbers
import os
from typing import Any

from .base import ClusterError, Compute, Executor, InProcess, Task, compute_point, crash_record
from .local import LocalPool

__all__ = ["ClusterError", "Compute", "Executor", "InProcess", "LocalPool", "Task",
           "compute_point", "crash_record", "make_executor"]


def make_executor(jobs: int = 1, cluster: Any = None) -> Executor:
    """``cluster`` (``local:N`` / ``tcp://HOST:PORT``, or the caller's ``distributed.Client``
    or Dask cluster object, left open): a Dask executor (Dask imported only then; ``jobs``
    other than 1 beside it is refused); else ``jobs`` processes (1: this process)."""
    # one rule with or without a cluster: jobs=True beside a cluster was taken for 1 (True ==
    # 1) where it alone was refused; a NumPy integer (as limit takes one) was refused
    if isinstance(jobs, bool) or not isinstance(jobs, numbers.Integral):
        raise TypeError(f"jobs = {jobs!r} has the wrong type; accepted: an integer >= 1")
    jobs = int(jobs)
    if cluster is not None:
        from .dask import DaskExecutor, _given  # neither imports Dask

        if isinstance(cluster, os.PathLike):  # a scheduler file given as a Path
            cluster = os.fspath(cluster)
        if not isinstance(cluster, str) and _given(cluster) is None:
            raise TypeError(f"cluster = {cluster!r} has the wrong type; accepted: \"local:N\" "
                            "or \"tcp://HOST:PORT\" or a scheduler file, a distributed.Client "
                            "or a Dask cluster object (or None)")
        if jobs != 1:  # as the CLI's --jobs with --cluster: not silently ignored
            raise ValueError(f"jobs = {jobs!r} and cluster = {cluster!r} do not go together; "
                             "give one (with cluster=\"local:N\" the cluster has N worker "
                             "processes)")
        return DaskExecutor(cluster)
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    return InProcess() if jobs == 1 else LocalPool(jobs)

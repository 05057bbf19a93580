"""Independent tasks on Dask workers (``reproduce_thesis``'s fits; the ``tune`` engine
has its own rounds), or in this process when there is one worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def run_tasks(
    function: Callable[..., Any],
    shared: Sequence[Any],
    tasks: Sequence[Sequence[Any]],
    workers: int = 1,
    scheduler: str | None = None,
) -> list[Any]:
    """``[function(*shared, *task) for task in tasks]``, in order.

    With ``workers == 1`` and no ``scheduler``, in this process; else on a local Dask
    cluster of ``workers`` single-threaded processes, or on the cluster of ``scheduler``
    (``tcp://host:8786``), ``shared`` sent to every worker once. The first failed task's
    error is raised.
    """
    if workers == 1 and scheduler is None:
        return [function(*shared, *task) for task in tasks]
    with dask_client(workers, scheduler) as client:
        scattered = client.scatter(list(shared), broadcast=True)
        futures = [client.submit(function, *scattered, *task, pure=False) for task in tasks]
        return client.gather(futures)


@contextmanager
def dask_client(workers: int, scheduler: str | None, rerun_lost_tasks: bool = True) -> Iterator[Any]:
    """A Dask client of a local cluster of ``workers`` single-threaded processes, or of
    the cluster of ``scheduler``; closed (the local cluster too) on exit.

    Without ``rerun_lost_tasks`` the local cluster fails a task whose worker died
    (``KilledWorker``) instead of running it again elsewhere, for a caller that retries
    itself; a remote scheduler keeps its own setting.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    if scheduler is None:
        allowed = {} if rerun_lost_tasks else {"distributed.scheduler.allowed-failures": 0}
        with dask.config.set(allowed):  # read once, as the scheduler starts
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster if cluster is not None else scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

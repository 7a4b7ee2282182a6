"""Where work runs: local processes (the default, nothing to start) or a Dask cluster.

`dask_client(scheduler)` gives a `distributed.Client` for a scheduler address
('tcp://host:8786'), 'local' (a LocalCluster on this machine), an existing
Client or cluster object (e.g. a dask-jobqueue SLURMCluster), or None (no Dask:
callers keep their process pools). `map_ordered` is the ordered map of stages 00
and 01 over a client; `submit_trainings` sends the (model, Uset) trainings of
stage 05 as one Dask task each, with a GPU resource when the workers declare one.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from tqdm import tqdm

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(scheduler=None) -> Iterator[object | None]:
    """A Client for `scheduler` (address, 'local', Client, cluster) for the block; None for None.

    Clients and clusters made here are closed afterwards; one passed in is left open.
    """
    if scheduler is None or scheduler == "":
        yield None
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            from distributed import LocalCluster

            scheduler = stack.enter_context(LocalCluster(processes=True, threads_per_worker=1))
        elif not isinstance(scheduler, str):  # a cluster object (LocalCluster, SLURMCluster, ...)
            pass
        elif "://" not in scheduler and ":" not in scheduler:
            raise ValueError(f"scheduler {scheduler!r}; expected an address like tcp://host:8786, 'local', "
                             "or a distributed Client/cluster")
        client = stack.enter_context(Client(scheduler))
        log.info("Dask client %s: %d workers", client.dashboard_link,
                 len(client.scheduler_info().get("workers", {})))
        yield client


def map_ordered(func, tasks, client, progress: bool = True, desc: str = "") -> list:
    """``[func(t) for t in tasks]`` on the client's workers, in order, with a progress bar.

    A task whose worker dies is rerun elsewhere by Dask; an exception in any task is raised here.
    """
    from distributed import as_completed

    tasks = list(tasks)
    futures = client.map(func, tasks, pure=False)
    index = {f.key: k for k, f in enumerate(futures)}
    out = [None] * len(tasks)
    for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress, mininterval=1.0):
        out[index[fut.key]] = fut.result()
    return out


def worker_resources(client) -> set[str]:
    """Names of the resources (e.g. 'GPU') that some worker of the cluster declares."""
    workers = client.scheduler_info().get("workers", {}).values()
    return {name for w in workers for name in (w.get("resources") or {})}


def train_one(argv: list[str]) -> int:
    """One training as ``python -m inclinet_utils.train ARGV`` would run it, on a worker; its exit code."""
    from . import train

    code = train.main(argv)
    if code:
        raise RuntimeError(f"python -m inclinet_utils.train {' '.join(argv)} exited with {code}")
    return code


def training_argv(run_dir, model: str, uset: int, options: dict | None = None) -> list[str]:
    """Arguments of ``python -m inclinet_utils.train`` for one (model, Uset); `options` as --key value."""
    argv = ["--run-dir", str(run_dir), "--models", model, "--usets", str(int(uset))]
    for key, value in (options or {}).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


def submit_trainings(client, run_dir, jobs, options: dict | None = None, progress: bool = True) -> dict:
    """Train each (model, Uset) of `jobs` as one Dask task (a GPU each when the workers declare 'GPU').

    Trainings write their own files under the run's models/ folder (the run
    folder must be on a file system the workers share). Returns (model, uset) -> exit code.
    """
    from distributed import as_completed

    resources = {"GPU": 1} if "GPU" in worker_resources(client) else None
    futures, names = [], {}
    for model, uset in jobs:
        argv = training_argv(run_dir, model, uset, options)
        fut = client.submit(train_one, argv, key=f"inclinet-train-{model}-{int(uset):03d}", pure=False,
                            resources=resources)
        futures.append(fut)
        names[fut.key] = (model, int(uset))
    out = {}
    for fut in tqdm(as_completed(futures), total=len(futures), desc="trainings", disable=not progress):
        out[names[fut.key]] = fut.result()
    return out

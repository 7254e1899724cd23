"""Where the points run: a local process pool (default) or a Ray cluster (``pip install kan2mcu[ray]``).

Both yield ``run_point`` outputs as they finish; the caller stores each one at once, so an
interrupted sweep keeps every point that finished.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

from kan2mcu.errors import OptionError
from kan2mcu.sweep.point import PointTask, run_point

EXECUTORS = ("local", "ray")


def _worker_init() -> None:
    # Each worker is one point at a time: keep numpy/torch to one thread so N jobs use N cores.
    os.environ["OMP_NUM_THREADS"] = "1"


def run_local(tasks: list[PointTask], jobs: int) -> Iterator[dict]:
    """Run ``tasks`` on ``jobs`` worker processes (spawned: torch and fork do not mix); with one
    job, in this process (no start-up cost, and easier to debug)."""
    if not tasks:
        return
    if jobs == 1:
        for task in tasks:
            yield run_point(task)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                             initializer=_worker_init) as pool:
        futures = [pool.submit(run_point, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:  # interrupted: do not start the points still waiting
                future.cancel()


def run_ray(tasks: list[PointTask], address: str | None) -> Iterator[dict]:
    """Run ``tasks`` as Ray tasks (one CPU each) on the cluster at ``address``, or the Ray instance
    this process already joined, or a new local one."""
    try:
        import ray  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise OptionError("--executor ray needs Ray: pip install 'kan2mcu[ray]'") from None
    if not tasks:
        return
    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            raise OptionError(f"--executor ray: cannot join Ray at {address or 'a new local instance'} "
                              f"({str(exc).splitlines()[0][:200]})") from None
        started_here = True
    remote = ray.remote(num_cpus=1, max_retries=0)(run_point)
    pending = [remote.remote(task) for task in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def run_tasks(tasks: list[PointTask], executor: str, jobs: int, address: str | None) -> Iterator[dict]:
    """Dispatch to the chosen executor."""
    if executor == "local":
        if address:
            raise OptionError("--address is for --executor ray")
        if jobs < 1:
            raise OptionError(f"--jobs must be at least 1, got {jobs}")
        return run_local(tasks, jobs)
    if executor == "ray":
        return run_ray(tasks, address)
    raise OptionError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")

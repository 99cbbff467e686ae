"""One render's many independent jobs (day pages), shared by this process and helper processes.

A first or a full render of a large archive is mostly day pages, each written on its own from
its own query, so they can be written on every core at once. `Share` starts helper processes
(forkserver: a helper must not start as a copy of a process with threads and an open database),
each of which makes its own worker (its own read-only database connection) and takes jobs from
a shared counter until none are left; this process takes jobs from the same counter once it has
done its own work, so a busy core takes fewer. A helper never waits for this process: it ends
when the jobs run out or its parent is gone. Whatever a helper did not report (it failed or was
killed) is done again here, so the result is the same as with no helpers at all.

What it does not know: how a page is made (templates, SQL). A job is any picklable value; a
worker is any callable that does one job and returns a picklable result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:  # multiprocessing is imported when helpers start: most renders need none
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import Synchronized

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
J_contra = TypeVar("J_contra", contravariant=True)

#: At most this many helper processes, whatever the number of cores.
MAX_HELPERS = 7


class Worker(Protocol[J_contra, R_co]):
    """Does one job at a time in a helper process; `close` when no jobs are left."""

    def __call__(self, job: J_contra, /) -> R_co: ...

    def close(self) -> None: ...


def default_helpers() -> int:
    """One helper per core this process may use, besides its own."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(max(cores - 1, 0), MAX_HELPERS)


class Share(Generic[J, R]):
    """The jobs of one render, and the helper processes (maybe none) that take some of them."""

    def __init__(
        self,
        jobs: Sequence[J],
        counter: Synchronized[int] | None = None,
        helpers: Sequence[tuple[BaseProcess, Connection]] = (),
    ) -> None:
        self.jobs = list(jobs)
        self._counter = counter
        self._next = 0  # the next job, when there are no helpers to share the counter with
        self._helpers = list(helpers)

    @classmethod
    def start(cls, jobs: Sequence[J], make_worker: Callable[[], Worker[J, R]] | None, helpers: int) -> Share[J, R]:
        """Start `helpers` processes, each with `make_worker()`, on `jobs`; none without `make_worker`.

        Helpers that cannot start (no process may be started here) leave the jobs to this process.
        """
        if make_worker is None or helpers < 1 or len(jobs) < 2:
            return cls(jobs)
        import multiprocessing

        if multiprocessing.current_process().daemon:
            return cls(jobs)  # a daemonic process (a pool's worker) may not start processes
        context = multiprocessing.get_context("forkserver")
        counter: Synchronized[int] | None = None
        started: list[tuple[BaseProcess, Connection]] = []
        try:
            counter = context.Value("q", 0)
            for _ in range(min(helpers, len(jobs) - 1)):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(
                    target=_help, args=(make_worker, list(jobs), counter, sender), name="render-helper", daemon=True
                )
                process.start()
                sender.close()  # the helper's end: the receiver sees EOF once the helper is gone
                started.append((process, receiver))
        except (OSError, ImportError) as error:  # no /dev/shm, no working sem_open, a process limit
            log.warning("cannot start render helpers (%s): this process renders every page", error)
        return cls(jobs, counter, started)

    def run(self, worker: Callable[[J], R]) -> list[R]:
        """Do jobs with `worker` until none are left, then collect the helpers' results: one per job, in order."""
        results: dict[int, R] = {}
        while (index := self._claim()) < len(self.jobs):
            results[index] = worker(self.jobs[index])
        here = len(results)
        for process, receiver in self._helpers:
            results.update(_results_of(process, receiver))
        if self._helpers:
            log.debug("%d helpers did %d of %d jobs", len(self._helpers), len(results) - here, len(self.jobs))
        self._helpers = []
        for index, job in enumerate(self.jobs):
            if index not in results:  # a helper took it and failed, or was killed
                results[index] = worker(job)
        return [results[index] for index in range(len(self.jobs))]

    def stop(self) -> None:
        """End any helper still at work (after a failure here): no job is taken any more."""
        if self._counter is not None:
            with self._counter.get_lock():
                self._counter.value = len(self.jobs)
        for process, receiver in self._helpers:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
            receiver.close()
        self._helpers = []

    def _claim(self) -> int:
        if self._counter is None:
            self._next += 1
            return self._next - 1
        return _claim(self._counter)


def _claim(counter: Synchronized[int]) -> int:
    """The index of the next job nobody has taken."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    return int(index)


def _help(
    make_worker: Callable[[], Worker[J, R]], jobs: list[J], counter: Synchronized[int], sender: Connection
) -> None:
    """A helper process: do jobs until none are left (or the parent is gone), then send the results."""
    import multiprocessing
    import signal

    # Ctrl-C in a terminal reaches every process: the parent decides, and ends the helpers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    results: dict[int, R] = {}
    failure = None
    try:
        worker = make_worker()
        try:
            while (parent is None or parent.is_alive()) and (index := _claim(counter)) < len(jobs):
                results[index] = worker(jobs[index])
        finally:
            worker.close()
    except Exception as error:  # the parent does this helper's last job again, and says why
        failure = f"{type(error).__name__}: {error}"
    try:
        sender.send((results, failure))
    except OSError:
        pass  # the parent is gone
    finally:
        sender.close()


def _results_of(process: BaseProcess, receiver: Connection) -> dict[int, R]:
    """What a helper did, once it is done (nothing if it died without saying)."""
    results: dict[int, R] = {}
    try:
        results, failure = receiver.recv()
    except (EOFError, OSError):
        failure = None  # said below, once its exit code is known
    finally:
        receiver.close()
    process.join()
    if failure is None and process.exitcode != 0:
        failure = f"it ended with exit code {process.exitcode}"
    if failure is not None:
        log.warning("a render helper failed (%s): its remaining pages are rendered here", failure)
    return results

"""One Ray task per item, at most ``workers`` in flight: the engine of ``invdiff batch`` and ``invdiff bench --jobs``.

:func:`ray_session` starts a local Ray cluster (``num_cpus = workers``, no dashboard, no usage
statistics: it starts offline) or joins an existing one (``address``, e.g. ``"auto"`` or
``"10.0.0.1:6379"`` after ``ray start --head``); a Ray already initialised in the process is used
as it is. :func:`run_tasks` submits ``fn(item)`` for every item and yields ``(index, value)`` as
tasks finish; a task that raised yields a :class:`TaskFailure` instead, and so does a task whose
worker process died more than ``max_retries`` times (Ray reruns such a task on a fresh worker;
an exception raised by ``fn`` itself is not retried).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskFailure:
    """A task that did not return: ``kind`` is the exception's type name, ``message`` its first line."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"Ray is not installed ({err}); pip install 'invdiff[ray]' (or 'ray>=2.9')") from None
    return ray


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """Yield the ``ray`` module with a cluster connected; shut down on exit what this call started.

    ``address`` None starts a local cluster of ``workers`` CPUs (default: all of this machine's);
    otherwise ``ray.init(address=address)`` joins the cluster there. If Ray is already initialised
    in this process it is used as it is and left running.
    """
    _positive("workers", workers)
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network call at start
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _failure(err: BaseException) -> TaskFailure:
    cause = getattr(err, "cause", None)  # RayTaskError wraps the task's own exception
    err = cause if isinstance(cause, BaseException) else err
    text = str(err).strip().splitlines()
    return TaskFailure(type(err).__name__, text[0] if text else "")


def run_tasks(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int | None = None, max_retries: int = 3,
              num_cpus: float = 1.0, num_gpus: float = 0.0) -> Iterator[tuple[int, Any]]:
    """Run ``fn(item)`` as one Ray task per item; yield ``(index, result)`` in the order tasks finish.

    At most ``workers`` tasks are in flight (default: all at once; Ray queues them on the cluster's
    CPUs, ``num_cpus`` and ``num_gpus`` each; Ray shows a task only the GPUs it was given, as
    ``cuda:0``, ...). ``result`` is ``fn``'s return value, or a :class:`TaskFailure` for a
    task that raised or whose worker died more than ``max_retries`` times. Needs a connected Ray
    (:func:`ray_session`); ``fn`` must be importable (a module-level function).
    """
    _positive("workers", workers)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries: expected a non-negative integer, got {max_retries!r}")
    ray = _import_ray()
    remote = ray.remote(fn).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                    retry_exceptions=False)
    pending = list(enumerate(items))[::-1]  # popped from the end: submitted in order
    running: dict[Any, int] = {}
    while pending or running:
        while pending and (workers is None or len(running) < workers):
            i, item = pending.pop()
            running[remote.remote(item)] = i
        (ref,), _ = ray.wait(list(running), num_returns=1)
        i = running.pop(ref)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayError as err:  # the task raised, or its worker died max_retries + 1 times
            value = _failure(err)
        yield i, value

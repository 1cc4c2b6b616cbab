"""Prepare the next item in a background thread while the caller works on the current one.

The local engine uses it so that pre-processing (loading, the upscale, the processor's tiling and
normalising: ~225 ms per page with transformers' slow LLaVA-OneVision image processor) of batch N+1
runs while batch N generates: on a GPU, generate waits on the GPU with the GIL released, and the
accelerator otherwise idles while the next batch is prepared on the main thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

J = TypeVar("J")
P = TypeVar("P")

_DONE = object()


def prefetched(jobs: Iterable[J], prepare: Callable[[J], P], *, enabled: bool = True,
               name: str = "varco-ocr-prefetch", stop: threading.Event | None = None) -> Iterator[tuple[J, P]]:
    """``(job, prepare(job))`` for each job in order, ``prepare`` running one job ahead in a thread.

    At most two prepared items are alive: the one the caller holds and the next one (a slot is taken
    before preparing and given back when the caller takes an item), so memory stays bounded whatever
    the number of jobs. ``jobs`` is iterated in the thread too. An exception raised by ``prepare`` or
    by ``jobs`` is raised to the caller at the point it would have been met without the thread.
    Closing the generator early stops the thread (after the item it is preparing, if any). The
    thread also iterates ``jobs``: a ``jobs`` that waits for work (the batch runner's feed) must watch
    ``stop``, which is set when this generator ends however it ends (an exception such as Ctrl-C
    included); otherwise ending would wait for its next item forever.
    With ``enabled=False`` everything runs in the caller's thread, in the same order.
    """
    if not enabled:
        for job in jobs:
            yield job, prepare(job)
        return
    ready: queue.Queue = queue.Queue()
    slot = threading.Semaphore(1)  # prepared items not yet taken by the caller
    stop = stop if stop is not None else threading.Event()

    def work() -> None:
        try:
            for job in jobs:
                while not slot.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                ready.put((job, prepare(job)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
            ready.put(e)
            return
        ready.put(_DONE)

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            slot.release()  # the caller holds this one now: the thread may prepare the next
            yield item
    finally:
        stop.set()
        worker.join()

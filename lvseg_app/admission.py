"""Who may run an analysis now: one at a time per session, a few at a time per server.

A public Space is one process shared by every visitor. Each analysis (a
segmentation, a model comparison) takes a slot of a server-wide
:class:`threading.BoundedSemaphore` (``LVSEG_ANALYSIS_SLOTS``, default 1)
and waits in a short queue (``LVSEG_ANALYSIS_QUEUE``, default 4 waiting)
while the page shows "waiting"; a session that already runs one is told so.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import streamlit as st

from lvseg_core import settings
from lvseg_core.errors import LVSegError

#: Seconds between two looks at the queue while waiting.
POLL_SECONDS = 0.5


@dataclass
class Gate:
    """The server-wide slots and the number of analyses waiting for one."""

    slots: threading.BoundedSemaphore
    queue_limit: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: int = 0


@st.cache_resource(show_spinner=False)
def _gate(slots: int, queue_limit: int) -> Gate:
    return Gate(threading.BoundedSemaphore(slots), queue_limit)


def gate() -> Gate:
    """This server's :class:`Gate` (one per process, shared by all sessions)."""
    return _gate(settings.analysis_slots(), settings.analysis_queue())


class Busy(LVSegError):
    """The server's queue is full, or this session already runs an analysis."""


@contextmanager
def analysis_slot(on_wait: Callable[[int], None] | None = None,
                  session: dict | None = None) -> Iterator[None]:
    """Hold one analysis slot for the block.

    Raises :class:`Busy` at once when this session (``st.session_state``, or
    ``session``) already holds a slot or when the queue is full; otherwise
    waits, calling ``on_wait(ahead)`` (analyses queued before this one) every
    :data:`POLL_SECONDS` until a slot is free.
    """
    state = st.session_state if session is None else session
    if state.get("_lvseg_analysis_running"):
        raise Busy("An analysis of this session is still running; wait for it to finish.")
    g = gate()
    if not g.slots.acquire(blocking=False):
        with g.lock:
            if g.waiting >= g.queue_limit:
                raise Busy(f"The server is busy ({g.waiting} analyses waiting); "
                           "try again in a minute.")
            g.waiting += 1
            ahead = g.waiting
        try:
            while not g.slots.acquire(timeout=POLL_SECONDS):
                if on_wait is not None:
                    on_wait(ahead)
        finally:
            with g.lock:
                g.waiting -= 1
    state["_lvseg_analysis_running"] = time.time()
    try:
        yield
    finally:
        state.pop("_lvseg_analysis_running", None)
        g.slots.release()


@contextmanager
def queued() -> Iterator[None]:
    """:func:`analysis_slot` with a visible "waiting" line while in the queue."""
    notice = st.empty()

    def waiting(ahead: int) -> None:
        notice.info(f"Waiting for a free analysis slot: {ahead} analysis"
                    f"{'es' if ahead != 1 else ''} ahead on this server…",
                    icon=":material/hourglass_top:")

    try:
        with analysis_slot(waiting):
            notice.empty()
            yield
    finally:
        notice.empty()

"""A test that hangs fails in minutes, saying where it waits, instead of eating CI's time.

A CI run once sat 87 minutes in one Redis Cluster conformance test until CI's own limit killed
it, and its only trace was the signal handler's line. Here each test (setup, call and teardown)
gets ``WSQ_TEST_HANG_S`` seconds (default 600: the longest test takes ~90 s on a 2-core
machine and bounds its own subprocess at 600). Past that the watch prints, outside pytest's capture, every thread's stack and every
pending asyncio task's chain of awaits (a suspended task's own stack shows only its outermost
frame: the chain is what names the wait), then cancels those tasks, so that the test fails
with that output and the rest of the run goes on. If the test still has not ended
``GRACE_S`` later (a wait that ignores cancellation), the process ends with status 7.
``WSQ_TEST_HANG_S=0`` turns the watch off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

HANG_S = float(os.environ.get("WSQ_TEST_HANG_S", "600"))
GRACE_S = float(os.environ.get("WSQ_TEST_HANG_GRACE_S", "60"))
#: The run's exit status when a test ignored the cancellation (pytest's own are 0-5).
EXIT_HUNG = 7


def _await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where ``task`` waits: each coroutine of its chain of awaits, outermost first."""
    lines: list[str] = []
    link: Any = task.get_coro()
    for _ in range(200):  # a chain is short; a cycle must not hang the watch itself
        frame = getattr(link, "cr_frame", None) or getattr(link, "gi_frame", None)
        frame = frame or getattr(link, "ag_frame", None)
        if frame is None:
            lines.append(f"    awaiting {link!r}"[:300])
            break
        code = frame.f_code
        lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        nxt = getattr(link, "cr_await", None) or getattr(link, "gi_yieldfrom", None)
        nxt = nxt or getattr(link, "ag_await", None)
        if nxt is None:
            break
        link = nxt
    return lines


def _pending_tasks() -> list[asyncio.Task[Any]]:
    # Read from another thread: the set may change meanwhile (then read again).
    for _ in range(10):
        try:
            # asyncio.all_tasks() needs the loop's own thread; its registry does not.
            every = list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
            return [t for t in every if not t.done()]
        except RuntimeError:
            continue
    return []


def describe_hang() -> str:
    """Every thread's stack and every pending task's chain of awaits, as text."""
    out: list[str] = []
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        out.append(f"-- thread {names.get(ident, ident)}")
        # The innermost frames say where it waits (the outer ones are pytest's own).
        out.extend(line.rstrip() for line in traceback.format_stack(frame)[-12:])
    for task in _pending_tasks():
        out.append(f"-- task {task.get_name()}")
        out.extend(_await_chain(task))
    return "\n".join(out)


class _Watch:
    def __init__(self, config: pytest.Config, nodeid: str) -> None:
        self.config = config
        self.nodeid = nodeid
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hang-watch", daemon=True)

    def _say(self, text: str) -> None:
        capman: Any = self.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            try:
                # From this thread, while the main one waits: it does nothing with the capture.
                with capman.global_and_fixture_disabled():
                    sys.stderr.write(text)
                    sys.stderr.flush()
                return
            except Exception:  # said below instead: the watch must go on
                pass
        if sys.__stderr__ is not None:
            sys.__stderr__.write(text)
            sys.__stderr__.flush()

    def _run(self) -> None:
        if self.done.wait(HANG_S):
            return
        try:
            where = describe_hang()
        except Exception as exc:  # the watch must still cancel and stop
            where = f"(not described: {exc!r})"
        self._say(
            f"\n\nwsq tests: {self.nodeid} still running after {HANG_S:g} s; cancelling its "
            f"tasks. Where it waits:\n{where}\n"
        )
        for task in _pending_tasks():
            with contextlib.suppress(RuntimeError):  # a task of a loop closed meanwhile
                task.get_loop().call_soon_threadsafe(task.cancel)
        if self.done.wait(GRACE_S):
            return
        # Not SIGINT: pytest-asyncio's runner takes a first one as one more cancellation, and
        # its close waits for the task that ignores them. The run ends here, as a failure.
        self._say(f"\nwsq tests: {self.nodeid} ignored the cancellation; ending the run\n")
        os._exit(EXIT_HUNG)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if HANG_S <= 0:  # WSQ_TEST_HANG_S=0: no watch (a debugger's session)
        yield
        return
    watch = _Watch(item.config, item.nodeid)
    watch.thread.start()
    try:
        yield
    finally:
        watch.done.set()

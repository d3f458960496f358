"""``stop``: background tasks end when stopped, even one whose first cancellation was lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wsq.background import stop


async def loses_cancellations(lost: list[int], ran: list[int]) -> None:
    """A loop that goes on after its first ``lost[0]`` cancellations (as one lost in 3.11's
    ``wait_for`` does)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            ran.append(1)
            if len(ran) > lost[0]:
                raise


async def end(task: asyncio.Task[None], lost: list[int]) -> None:
    """Let a test's never-ending task end."""
    lost[0] = 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_whose_cancellation_was_lost_is_cancelled_again_until_it_ends() -> None:
    ran: list[int] = []
    task = asyncio.get_running_loop().create_task(loses_cancellations([2], ran))
    await asyncio.sleep(0)
    await stop([task, None], patience_s=5.0, retry_s=0.05)
    assert task.cancelled() and len(ran) == 3


async def test_a_task_ending_on_its_own_after_a_cancellation_is_not_cancelled_again() -> None:
    # Its way out (giving back what it holds) must not be cut short by a second cancellation.
    cut: list[bool] = []

    async def cleans_up() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            try:
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                cut.append(True)
                raise

    task = asyncio.get_running_loop().create_task(cleans_up())
    await asyncio.sleep(0)
    await stop([task], retry_s=1.0)
    assert task.cancelled() and cut == []


async def test_a_task_that_never_ends_is_left_after_the_patience_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []
    lost = [10**9]
    task = asyncio.get_running_loop().create_task(loses_cancellations(lost, ran))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, "wsq.background"):
        await stop([task], patience_s=0.3, retry_s=0.05)
    assert not task.done() and "1 background tasks did not stop" in caplog.text
    await end(task, lost)


async def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.get_running_loop().create_task(fails())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, "wsq.background"):
        await stop([task])
    assert "ValueError('boom')" in caplog.text


async def test_the_stopper_s_own_cancellation_is_not_swallowed() -> None:
    ran: list[int] = []
    lost = [10**9]
    task = asyncio.get_running_loop().create_task(loses_cancellations(lost, ran))
    stopper = asyncio.get_running_loop().create_task(stop([task], patience_s=30))
    await asyncio.sleep(0.05)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await end(task, lost)

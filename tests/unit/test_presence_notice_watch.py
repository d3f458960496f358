"""What a Redis presence watcher makes of the notices its room's channel brings
(``wsq.broker.redis.presence._Watch``): versions only move it forward, anything malformed or
too long is ignored, a resubscription counts as a possible miss, and a notice that a later
read contradicts (a forged one, a version that restarted) is forgotten."""

from __future__ import annotations

from wsq.broker.redis.presence import MAX_NOTICE, _Watch


def test_a_newer_version_wakes_the_watcher_and_anything_else_does_not() -> None:
    watch = _Watch()
    woken = watch.changed
    watch.notice("v:5")
    assert watch.noticed == 5 and woken.is_set()
    for junk in ("v:3", "v:5", "v:abc", "v:", "v:" + "9" * MAX_NOTICE):
        waiting = watch.changed
        watch.notice(junk)
        assert watch.noticed == 5 and not waiting.is_set(), junk
    assert not watch.missed


def test_a_resubscription_is_a_possible_miss() -> None:
    watch = _Watch()
    waiting = watch.changed
    watch.notice(None)
    assert watch.missed and waiting.is_set() and watch.noticed == -1


def test_a_read_sent_after_a_notice_that_finds_an_older_version_corrects_it() -> None:
    watch = _Watch()
    sent = watch.seq
    watch.notice("v:7")  # taken while the GET was under way: it may have run before the change
    watch.read(6, sent)
    assert watch.noticed == 7
    watch.read(7, watch.seq)
    watch.notice("v:999999")  # forged, or the room's version restarted
    watch.read(8, watch.seq)  # sent after it, nothing newer meanwhile: the notice was wrong
    assert watch.noticed == 8
    watch.notice("v:9")  # heard again
    assert watch.noticed == 9

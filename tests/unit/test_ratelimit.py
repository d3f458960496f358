"""The per-tenant token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from wsq.config import TenantConfig
from wsq.core.errors import PublishRateExceeded
from wsq.ratelimit import PublishRateLimiter, TokenBucket, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_admits_a_second_worth_then_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock)
    assert [bucket.take(1) for _ in range(10)] == [0.0] * 10
    assert bucket.take(1) == pytest.approx(0.1)
    clock.now += 0.25
    assert bucket.take(2) == 0.0  # 2.5 tokens refilled, 0.5 left
    assert bucket.take(1) == pytest.approx(0.05)  # the missing half token at 10 a second


def test_a_batch_larger_than_the_bucket_goes_into_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, clock)
    assert bucket.take(6) == 0.0  # a full bucket admits it ...
    assert bucket.take(1) == pytest.approx(2.5)  # ... and the debt is paid before the next
    clock.now += 2.5
    assert bucket.take(1) == 0.0


def test_limiter_is_per_tenant_and_zero_is_unlimited() -> None:
    clock = Clock()
    limiter = PublishRateLimiter(clock)
    slow = TenantConfig(name="slow", issuer="slow", keys=(), publish_rate=1.0)
    free = TenantConfig(name="free", issuer="free", keys=())
    limiter.check(slow, 1)
    with pytest.raises(PublishRateExceeded) as info:
        limiter.check(slow, 1)
    assert info.value.condition == "wsq:resource-limit-exceeded"
    assert info.value.http_status == 429
    assert info.value.retry_after_s == pytest.approx(1.0)
    for _ in range(1000):
        limiter.check(free, 100)
    clock.now += 1
    limiter.check(slow, 1)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.2) == "2"

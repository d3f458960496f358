"""wsq.core.errors: each error's wire object, and the words and figures of the two that carry
more than a description (a spent publish rate, a tenant's quota)."""

from __future__ import annotations

from wsq.core.errors import (
    ADDRESSES,
    CONNECTIONS,
    GROUPS,
    LINKS,
    Forbidden,
    PublishRateExceeded,
    QuotaExceeded,
    WsqError,
)


def test_an_error_goes_out_as_its_condition_and_description() -> None:
    assert Forbidden("no right to publish on a.b").to_error() == {
        "condition": "wsq:forbidden",
        "description": "no right to publish on a.b",
    }
    assert WsqError().to_error() == {"condition": "wsq:internal-error", "description": ""}
    assert str(Forbidden("x")) == "x"


def test_a_spent_publish_rate_says_when_to_try_again() -> None:
    default = PublishRateExceeded()
    assert (default.description, default.retry_after_s) == ("", 1.0)
    told = PublishRateExceeded("slow down", retry_after_s=0.25)
    assert told.to_error() == {
        "condition": "wsq:resource-limit-exceeded",
        "description": "slow down",
    }
    assert told.retry_after_s == 0.25
    assert told.http_status == 429


def test_a_quota_error_names_the_quota_and_keeps_its_figures() -> None:
    for kind in (CONNECTIONS, LINKS, ADDRESSES):
        error = QuotaExceeded("acme", kind, 3)
        assert error.description == f"the tenant's quota of 3 {kind} is reached"
        assert (error.tenant, error.kind, error.limit, error.retry_after_s) == (
            "acme",
            kind,
            3,
            None,
        )
    groups = QuotaExceeded("acme", GROUPS, 32, 1.5)
    assert groups.to_error() == {
        "condition": "wsq:resource-limit-exceeded",
        "description": "the tenant's quota of 32 groups per address is reached",
    }
    assert groups.retry_after_s == 1.5
    assert (CONNECTIONS, LINKS, ADDRESSES, GROUPS) == (
        "connections",
        "links",
        "addresses",
        "groups",
    )

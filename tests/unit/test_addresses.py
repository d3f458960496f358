"""wsq.core.addresses: the address and pattern grammar of contract section 6, and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsq.core.addresses import (
    MAX_ADDRESS_LENGTH,
    Pattern,
    compile_pattern,
    is_sys_address,
    is_valid_address,
    is_valid_pattern,
    matches_any,
)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


# -- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "chat",
        "chat.room1",
        "news.eu",
        "orders.de.eu",
        "a.b.c.d.e.f",
        "A-Z_09",
        "-",
        "_",
        "0",
        "user.42",
        "x" * 255,
        ".".join(["ab"] * 85),  # 254 characters in 85 tokens
        TOKEN_CHARS,
    ],
)
def test_a_valid_address_is_accepted(address: str) -> None:
    assert is_valid_address(address)
    assert is_valid_pattern(address)  # every address is a pattern too


def test_an_address_of_255_characters_is_valid_and_256_is_not() -> None:
    assert MAX_ADDRESS_LENGTH == 255
    assert is_valid_address("a" * 255)
    assert not is_valid_address("a" * 256)
    assert is_valid_address("ab." * 84 + "abc")  # 255 with dots
    assert not is_valid_address("ab." * 84 + "abcd")


@pytest.mark.parametrize(
    "address",
    [
        "",
        ".",
        "..",
        ".chat",
        "chat.",
        "chat..room",
        "chat room",
        " chat",
        "chat\n",
        "chat\t.x",
        "chat/room",
        "chat:room",
        "chat.room#1",
        "é",
        "chat.rööm",
        "chat.\u0661",  # an Arabic-Indic digit is not [0-9]
        "\uff43\uff48\uff41\uff54",  # fullwidth "chat": not [A-Za-z]
        "*",
        ">",
        "news.*",
        "news.>",
        "a" * 256,
    ],
)
def test_an_invalid_address_is_refused(address: str) -> None:
    assert not is_valid_address(address)


@pytest.mark.parametrize("value", [None, 1, 1.5, True, b"chat", ["chat"], {"a": 1}])
def test_an_address_must_be_a_string(value: object) -> None:
    assert not is_valid_address(value)
    assert not is_valid_pattern(value)


@given(st.lists(st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10), min_size=1, max_size=30))
def test_any_dot_joined_tokens_up_to_255_characters_are_an_address(tokens: list[str]) -> None:
    address = ".".join(tokens)
    assert is_valid_address(address) is (len(address) <= 255)


@given(st.text(max_size=40))
def test_an_address_is_valid_exactly_when_it_follows_the_grammar(text: str) -> None:
    tokens = text.split(".")
    expected = all(token and all(c in TOKEN_CHARS for c in token) for token in tokens)
    assert is_valid_address(text) is expected


# -- patterns -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        ">",
        "news.>",
        "user.42.*",
        "orders.*.eu",
        "*.*",
        "*.>",
        "a.*.b.*.c.>",
        "chat.room1",
        "*" + ".*" * 127,  # 255 characters
    ],
)
def test_a_valid_pattern_is_accepted(pattern: str) -> None:
    assert is_valid_pattern(pattern)
    assert Pattern(pattern).text == pattern


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        ".",
        "news.",
        ".news",
        "news..eu",
        ">.news",  # > must be the last token
        "news.>.eu",
        ">.>",
        "news.**",
        "news.*x",
        "news.x*",
        "news.>x",
        "news.x>",
        "news.#",
        "news eu",
        "a" * 256,
        "*" + ".*" * 128,  # 257 characters
    ],
)
def test_an_invalid_pattern_is_refused(pattern: str) -> None:
    assert not is_valid_pattern(pattern)
    with pytest.raises(ValueError):
        Pattern(pattern)


def test_a_pattern_of_255_characters_is_valid_and_256_is_not() -> None:
    assert is_valid_pattern("a" * 255)
    assert not is_valid_pattern("a" * 256)
    assert is_valid_pattern("a" * 253 + ".>")
    assert not is_valid_pattern("a" * 254 + ".>")


@pytest.mark.parametrize(
    ("pattern", "address", "expected"),
    [
        # exact
        ("chat.room1", "chat.room1", True),
        ("chat.room1", "chat.room2", False),
        ("chat.room1", "chat.room1.x", False),
        ("chat.room1", "chat", False),
        # * is exactly one token
        ("user.42.*", "user.42.inbox", True),
        ("user.42.*", "user.42", False),
        ("user.42.*", "user.42.inbox.x", False),
        ("user.42.*", "user.43.inbox", False),
        ("orders.*.eu", "orders.de.eu", True),
        ("orders.*.eu", "orders.de.us", False),
        ("orders.*.eu", "orders.eu", False),
        ("orders.*.eu", "orders.de.fr.eu", False),
        ("*", "chat", True),
        ("*", "chat.room1", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("*.*", "a.b.c", False),
        # > is one or more tokens, at the end
        ("news.>", "news.eu", True),
        ("news.>", "news.eu.de.berlin", True),
        ("news.>", "news", False),
        ("news.>", "newsx.eu", False),
        ("news.>", "sport.eu", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("a.*.c.>", "a.b.c.d", True),
        ("a.*.c.>", "a.b.c", False),
        ("a.*.c.>", "a.b.x.d", False),
        # tokens compare whole, case-sensitively
        ("news.eu", "news.EU", False),
        ("news.*", "News.eu", False),
        ("news.e", "news.eu", False),
    ],
)
def test_pattern_matching(pattern: str, address: str, expected: bool) -> None:
    assert Pattern(pattern).matches(address) is expected
    assert compile_pattern(pattern).matches(address) is expected


@given(
    st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=1, max_size=5),
    st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=5),
    st.booleans(),
)
def test_matching_agrees_with_a_token_by_token_reading(
    address_tokens: list[str], pattern_tokens: list[str], tail: bool
) -> None:
    if tail:
        pattern_tokens = [*pattern_tokens, ">"]
    if not pattern_tokens:
        return
    address = ".".join(address_tokens)
    pattern = ".".join(pattern_tokens)
    head = pattern_tokens[:-1] if tail else pattern_tokens
    # > needs at least one token more than the head; otherwise the lengths are equal.
    expected = len(address_tokens) > len(head) if tail else len(address_tokens) == len(head)
    expected = expected and all(p in ("*", a) for p, a in zip(head, address_tokens, strict=False))
    assert Pattern(pattern).matches(address) is expected


def test_patterns_compare_by_text_and_compile_once() -> None:
    assert Pattern("news.>") == Pattern("news.>")
    assert Pattern("news.>") != Pattern("news.*")
    assert Pattern("news.>") != "news.>"
    assert len({Pattern("a.*"), Pattern("a.*"), Pattern("b")}) == 2
    assert compile_pattern("orders.*.eu") is compile_pattern("orders.*.eu")
    assert repr(Pattern("a.*")) == "Pattern('a.*')"


def test_matches_any_is_true_when_one_pattern_matches() -> None:
    patterns = (Pattern("chat.*"), Pattern("news.>"))
    assert matches_any(patterns, "chat.room1")
    assert matches_any(patterns, "news.eu.de")
    assert not matches_any(patterns, "orders.de")
    assert not matches_any((), "chat.room1")


@pytest.mark.parametrize("pattern", ["*.a b", "*.*.a..b", "*.é", "a.*.%"])
def test_a_bad_token_after_a_wildcard_is_still_refused(pattern: str) -> None:
    assert not is_valid_pattern(pattern)
    with pytest.raises(ValueError) as caught:
        Pattern(pattern)
    assert str(caught.value) == f"invalid pattern: {pattern!r}"


def test_a_pattern_hashes_as_its_text() -> None:
    assert hash(Pattern("news.>")) == hash("news.>")
    assert hash(compile_pattern("a.*")) == hash("a.*")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$sys.stats", True),
        ("$sys.a.b", True),
        ("$sys.", False),
        ("$sys", False),
        ("$sys.a..b", False),
        ("sys.stats", False),
        ("$sys.*", False),
        ("$sys." + "a" * 255, True),
        ("$sys." + "a" * 256, False),
        (5, False),
    ],
)
def test_sys_addresses_are_sys_then_an_address(value: object, expected: bool) -> None:
    assert is_sys_address(value) is expected

"""The position grammar of ``wsq.core.positions``: each half 1 to 19 ASCII digits."""

from __future__ import annotations

import re

import pytest

from wsq.core.positions import (
    POSITION_PATTERN,
    START,
    format_position,
    is_valid_position,
    parse_position,
)

NINETEEN = "9" * 19


@pytest.mark.parametrize(
    ("text", "pos"),
    [
        ("0-0", (0, 0)),
        ("1-2", (1, 2)),
        ("0012-0034", (12, 34)),
        (f"{NINETEEN}-{NINETEEN}", (10**19 - 1, 10**19 - 1)),
        (f"{NINETEEN}-1", (10**19 - 1, 1)),
        (f"1-{NINETEEN}", (1, 10**19 - 1)),
    ],
)
def test_a_valid_position_is_read_exactly(text: str, pos: tuple[int, int]) -> None:
    assert parse_position(text) == pos
    assert is_valid_position(text)
    assert re.match(POSITION_PATTERN, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "-",
        "-1",
        "1-",
        "1-2-3",  # the first "-" splits: "2-3" is not digits
        f"{NINETEEN}9-1",  # 20 digits
        f"1-{NINETEEN}9",
        "a-1",
        "1-a",
        "\u0661-1",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit() and int(), not ASCII
        "1-\u0661",
        "\u00b2-1",  # SUPERSCRIPT TWO: isdigit() but not int()
        "1-\u00b2",
        " 1-1",
        "1-1 ",
        "+1-1",
        "1-+1",
    ],
)
def test_a_malformed_position_is_refused_with_its_text(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_position(text)
    assert str(caught.value) == f"invalid position: {text!r}"
    assert not is_valid_position(text)
    assert not re.match(POSITION_PATTERN, text)


@pytest.mark.parametrize("value", [None, 1, (1, 2), b"1-2"])
def test_only_strings_are_positions(value: object) -> None:
    assert not is_valid_position(value)


def test_format_is_parse_inverted() -> None:
    assert format_position((12, 34)) == "12-34"
    assert parse_position(format_position((10**19 - 1, 0))) == (10**19 - 1, 0)
    assert START == "0-0" == format_position((0, 0))

"""wsq.core.codec: JSON in and out of the wire, exact texts and values (mutation testing found
the fallbacks and the refusals unchecked by any unit test)."""

from __future__ import annotations

import re

import pytest

from wsq.core import codec


@pytest.mark.parametrize("text", ["12345678901234567890123", b"12345678901234567890123"])
def test_an_integer_of_more_than_64_bits_is_read_exactly(text: str | bytes) -> None:
    assert codec.loads(text) == 12345678901234567890123


def test_a_long_run_of_digits_in_a_string_is_read_as_the_string() -> None:
    assert codec.loads('{"n":"1234567890123456789012","x":1.5}') == {
        "n": "1234567890123456789012",
        "x": 1.5,
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("NaN", "NaN is not JSON"),
        ("Infinity", "Infinity is not JSON"),
        ("[-Infinity]", "-Infinity is not JSON"),
        ("1e400", "1e400 is too large for a double"),
        ("[1, -1e999]", "-1e999 is too large for a double"),
        ("[1,]", "Expecting value: line 1 column 4 (char 3)"),
    ],
)
def test_what_json_does_not_allow_is_refused_with_its_reason(text: str, error: str) -> None:
    with pytest.raises(codec.DecodeError) as caught:
        codec.loads(text)
    assert str(caught.value) == error


def test_a_lone_surrogate_escape_is_read_and_written_back_escaped() -> None:
    assert codec.loads('["\\ud800"]') == ["\ud800"]
    assert codec.dumps(["\ud800", 1]) == '["\\ud800",1]'


def test_nesting_past_the_recursion_limit_is_a_decode_error_not_a_crash() -> None:
    with pytest.raises(codec.DecodeError):
        codec.loads("[" * 100_000 + "]" * 100_000)


def test_a_decode_error_is_a_value_error() -> None:
    assert issubclass(codec.DecodeError, ValueError)


def test_dumps_is_compact_and_keeps_big_integers_exact() -> None:
    assert codec.dumps({"a": [1, "b"], "c": None}) == '{"a":[1,"b"],"c":null}'
    assert codec.dumps({"n": 2**70, "s": "x y"}) == '{"n":1180591620717411303424,"s":"x y"}'


def test_dumps_refuses_nan_and_values_nested_too_deeply() -> None:
    with pytest.raises(ValueError, match=r"^Out of range float values are not JSON compliant"):
        codec.dumps([2**70, float("nan")])
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"^value nested too deeply$"):
        codec.dumps(deep)
    with pytest.raises(TypeError):
        codec.dumps({"set": {1}})


def test_dumps_str_is_a_json_string_literal() -> None:
    assert codec.dumps_str('a"b\\c\n') == '"a\\"b\\\\c\\n"'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1" * 18,
        "1" * 19,
        "x" + "9" * 19 + "x",
        "0" * 19,
        '{"a":' + "1234567890" * 2 + "}",
        '{"a":123456789012345678,"b":1}',
        '{"a":"' + "5" * 18 + "é" + "5" * 18 + '"}',
        '{"a":"é' + "5" * 19 + '"}',
        "é" + "1" * 18,
        "0000000000000000000"[1:] + "a0",
    ],
)
def test_long_runs_of_digits_are_found_in_text_and_bytes_alike(text: str) -> None:
    expected = re.search(r"[0-9]{19}", text) is not None
    assert codec.has_long_digits(text) is expected
    assert codec.has_long_digits(text.encode()) is expected

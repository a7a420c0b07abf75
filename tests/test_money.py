"""Money formatting: the integer-only formatters agree with exact decimal arithmetic."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from creditgate.money import MICROS, format_amount, from_micros, json_amount


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_amount_is_the_exact_decimal_with_at_least_two_places(micros: int) -> None:
    text = format_amount(micros)
    assert Decimal(text) * MICROS == micros
    whole, _, frac = text.partition(".")
    assert len(frac) >= 2 and "e" not in text.lower()
    assert text == f"{whole}.{f'{from_micros(micros):f}'.partition('.')[2].ljust(2, '0')}"


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_json_amount_writes_the_exact_decimal(micros: int) -> None:
    value = json_amount(micros)
    assert Decimal(repr(value)) == from_micros(micros)


def test_examples() -> None:
    assert format_amount(1_234_500) == "1.2345"
    assert format_amount(0) == "0.00"
    assert format_amount(-4500) == "-0.0045"
    assert format_amount(5 * MICROS) == "5.00"
    assert json_amount(4500) == 0.0045 and json_amount(3 * MICROS) == 3

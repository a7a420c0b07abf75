"""Money as integers: micro-units of the wallet currency (1 unit = 1,000,000 micros).

Floats never touch an amount that is stored, compared or summed. `Decimal` appears only at
the edges: parsing what a person or a config file wrote, and formatting for display.
Prices are per 1M tokens, so a price in micros per 1M tokens times a token count divided by
1M is the cost in micros; the division rounds up, once per request, so a charge is never
smaller than its exact value and no fraction of a micro is invented twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MICROS = 1_000_000
_QUANTUM = Decimal(1).scaleb(-6)


class AmountError(ValueError):
    """An amount that cannot be represented exactly in micros."""


def to_micros(value: str | int | float | Decimal) -> int:
    """Parse an amount written by a person ("12.50", 12.5, 12) into micros, exactly.

    Floats are accepted only because JSON numbers arrive as floats; they are converted through
    their shortest decimal repr, so 0.1 means 0.1. More than six decimals is an error, not a
    silent rounding.
    """
    if isinstance(value, bool):
        raise AmountError("an amount must be a number or a decimal string, not a boolean")
    try:
        dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise AmountError(f"{value!r} is not a decimal amount; write it like 12.50") from None
    if not dec.is_finite():
        raise AmountError(f"{value!r} is not a finite amount")
    micros = dec * MICROS
    if micros != micros.to_integral_value():
        raise AmountError(f"{value!r} has more than 6 decimal places; the smallest unit is 0.000001")
    return int(micros)


def from_micros(micros: int) -> Decimal:
    """Micros as an exact Decimal in currency units (for display and JSON output)."""
    return (Decimal(micros) / MICROS).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN).normalize() + 0


def format_amount(micros: int) -> str:
    """A decimal string with no exponent and at least two decimals: 1234500 -> "1.2345".
    Integer arithmetic only (it runs on every response)."""
    whole, frac = divmod(abs(micros), MICROS)
    sign = "-" if micros < 0 else ""
    return f"{sign}{whole}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')}"


def json_amount(micros: int) -> float | int:
    """An amount for a JSON body. orjson writes a float by its shortest repr, which for
    any value with at most six decimals is exactly the decimal we mean. (`micros / MICROS`
    is the float nearest the exact quotient, as Python's int division is correctly rounded.)"""
    if micros % MICROS == 0:
        return micros // MICROS
    return micros / MICROS


def ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


@dataclass(frozen=True, slots=True)
class Price:
    """Micros per 1M tokens."""

    input: int
    output: int
    cached_input: int
    cache_write_input: int

    def cost(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """Cost in micros, rounded up once. `prompt_tokens` includes cached and cache-write
        tokens (the OpenAI convention); they are billed at their own prices."""
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        fresh = prompt_tokens - cached - written
        numerator = (
            fresh * self.input
            + cached * self.cached_input
            + written * self.cache_write_input
            + completion_tokens * self.output
        )
        return ceil_div(numerator, MICROS)

    def bound(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """The most a request of this size can cost, whatever share of it is cached."""
        highest_input = max(self.input, self.cached_input, self.cache_write_input)
        return ceil_div(prompt_tokens * highest_input + completion_tokens * self.output, MICROS)

    @property
    def blended(self) -> int:
        """One number for ranking by price: a 3:1 input:output mix, per 1M tokens."""
        return (3 * self.input + self.output) // 4

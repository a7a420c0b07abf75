"""Property tests of the ledger against a small reference model, on SQLite and PostgreSQL.

Random sequences of credits, holds, settlements (including failures and costs above the
hold) and the passing of days; after every step the service must agree with the model,
and at the end the postings must balance to the micro."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ledger.billing_support import ledger_invariants, make_settings

from creditgate.accounts import KeyOptions
from creditgate.billing import Outcome, Reservation
from creditgate.canonical import Usage
from creditgate.catalog import Catalog
from creditgate.errors import PaymentRequired
from creditgate.ledger.service import BillingService, open_billing

START = datetime(2030, 1, 1, tzinfo=UTC)

credit = st.tuples(
    st.just("credit"),
    st.integers(1, 3_000_000),
    st.sampled_from(["topup", "grant", "bonus"]),
    st.integers(1, 40),
)
reserve = st.tuples(st.just("reserve"), st.integers(0, 2_000_000))
settle = st.tuples(st.just("settle"), st.integers(0, 7), st.integers(0, 200_000), st.integers(0, 50_000), st.booleans())
advance = st.tuples(st.just("advance"), st.integers(1, 20))
programs = st.lists(st.one_of(credit, reserve, reserve, settle, settle, advance), min_size=1, max_size=25)


@dataclass
class RefLot:
    id: int
    expires_at: datetime
    remaining: int
    closed: bool = False


@dataclass
class Model:
    lots: list[RefLot] = field(default_factory=list)
    open: list[tuple[Reservation, datetime]] = field(default_factory=list)
    credited: int = 0
    charged: int = 0
    expired: int = 0

    def balance(self, now: datetime) -> int:
        return sum(lot.remaining for lot in self.lots if not lot.closed and lot.expires_at > now)

    def held(self) -> int:
        return sum(r.hold for r, _ in self.open)

    def fifo(self, taken_at: datetime) -> Iterator[RefLot]:
        live = [lot for lot in self.lots if not lot.closed and lot.expires_at > taken_at]
        return iter(sorted(live, key=lambda lot: (lot.expires_at, lot.id)))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _service(loop: asyncio.AbstractEventLoop, url: str, box: dict[str, Any]) -> BillingService:
    if "service" not in box:
        s = make_settings(url)
        box["service"] = loop.run_until_complete(open_billing(s, Catalog(s.file), sweep_interval=3600))
        box["n"] = 0
    service: BillingService = box["service"]
    return service


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=programs)
def test_ledger_follows_the_model(program: list[tuple[Any, ...]], db_url: str, loop: Any, request: Any) -> None:
    box = request.node.__dict__.setdefault("_billing", {})
    if "closer" not in box:
        box["closer"] = True
        request.addfinalizer(lambda: "service" in box and loop.run_until_complete(box["service"].close()))
    service = _service(loop, db_url, box)
    box["n"] += 1
    loop.run_until_complete(run(service, program, box["n"]))


async def run(service: BillingService, program: list[tuple[Any, ...]], n: int) -> None:
    clock = {"now": START}
    service.now = lambda: clock["now"]  # type: ignore[method-assign]
    account = await service.create_account(f"prop{n}@example.com")
    key = await service.create_key(account["id"], KeyOptions())
    principal = await service.authenticate(key["key"], "127.0.0.1")
    model_ = service.catalog.get("plain-model")
    assert model_ is not None
    ref = Model()
    for step, op in enumerate(program):
        now = clock["now"]
        if op[0] == "credit":
            _, amount, kind, days = op
            made = await service.add_credits(account["id"], amount, kind, expires_in_days=days)
            ref.lots.append(RefLot(made["lot_id"], now + timedelta(days=days), amount))
            ref.credited += amount
        elif op[0] == "reserve":
            hold = op[1]
            fits = ref.balance(now) - ref.held() >= hold
            try:
                r = await service.reserve(principal, model_, hold, f"p{n}-{step}")
            except PaymentRequired:
                assert not fits, "refused a hold that fits"
            else:
                assert fits, "accepted a hold that does not fit"
                ref.open.append((r, now))
        elif op[0] == "settle" and ref.open:
            _, index, prompt, completion, fails = op
            r, taken_at = ref.open.pop(index % len(ref.open))
            usage = None if fails else Usage(prompt_tokens=prompt, completion_tokens=completion)
            outcome = Outcome(model_, "sim/p", usage, False, "error" if fails else "ok", 1)
            cost = 0 if fails else model_.price.cost(prompt_tokens=prompt, completion_tokens=completion)
            charged = await service.settle(r, outcome)
            assert charged == min(cost, r.hold)
            left = charged
            for lot in ref.fifo(taken_at):
                take = min(lot.remaining, left)
                lot.remaining -= take
                left -= take
            assert left == 0
            ref.charged += charged
        elif op[0] == "advance":
            clock["now"] = now = now + timedelta(days=op[1])
            oldest = min((t for _, t in ref.open), default=None)
            cutoff = min(now, oldest) if oldest else now
            await service.sweep_expired(now)
            for lot in ref.lots:
                if not lot.closed and lot.expires_at <= cutoff:
                    ref.expired += lot.remaining
                    lot.remaining, lot.closed = 0, True
        view = await service.account_view(account["id"])
        balance, held = ref.balance(clock["now"]), ref.held()
        assert round(view["balance"] * 1_000_000) == balance
        assert round(view["held"] * 1_000_000) == held
        assert round(view["available"] * 1_000_000) == max(0, balance - held)
        # holds are always covered by lots that were live when each hold was taken
        assert sum(lot.remaining for lot in ref.lots if not lot.closed) >= held
    for r, _ in ref.open:
        await service.settle(r, Outcome(model_, None, None, False, "error", 1))
    # nothing lost or invented: credits = charges + expiries + what is left in the lots
    service.forget_account(account["id"])
    state = await service.account_state(account["id"])
    left = sum(lot.remaining for lot in state.lots)
    assert ref.credited == ref.charged + ref.expired + left
    assert {lot.id: lot.remaining for lot in state.lots} == {
        lot.id: lot.remaining for lot in ref.lots if lot.remaining and not lot.closed
    }
    await ledger_invariants(service)

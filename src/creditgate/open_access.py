"""Billing switched off (`billing.enabled: false`): the gateway core on its own, for a
private deployment that meters nothing, and for measuring what billing costs.

Requests need a key (any key, or one of `billing.open_keys` when that list is set); nothing
is held, charged or recorded, and no database is opened. The account, credit and admin
account routes are not mounted.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from creditgate.billing import Outcome, Principal, Reservation
from creditgate.catalog import CatalogModel
from creditgate.errors import Unauthorized


class OpenAccess:
    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self.keys = tuple(k.encode() for k in keys)

    async def authenticate(self, raw_key: str | None, client_ip: str) -> Principal:
        if not raw_key:
            raise Unauthorized("no API key: send it as `Authorization: Bearer <key>`")
        if self.keys and not any(hmac.compare_digest(raw_key.encode(), k) for k in self.keys):
            raise Unauthorized("invalid API key: it is not one of this gateway's keys")
        return Principal(account_id=0, key_id=None, kind="account", client_ip=client_ip)

    def refusal(self, principal: Principal, model: CatalogModel) -> str | None:
        return None

    async def reserve(self, principal: Principal, model: CatalogModel, hold: int, request_id: str) -> Reservation:
        return Reservation(principal, model.id, 0, None, datetime.now(UTC), request_id)

    async def settle(self, reservation: Reservation, outcome: Outcome) -> int:
        return 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

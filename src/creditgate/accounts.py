"""Accounts and API keys: generation, hashing, passwords, and their rows.

A key is `sk-` followed by 64 lowercase hex digits (256 random bits). Only its SHA-256 is
stored: a fast hash is right for a secret with that much entropy (nothing to brute-force),
and it lets a gateway look a key up by hash in one indexed read. Passwords, which people
choose, are hashed with argon2id instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from creditgate.errors import BadRequest
from creditgate.storage.schema import accounts, api_keys, cache_events

KEY_PATTERN = re.compile(r"^sk-[0-9a-f]{64}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_key() -> str:
    return "sk-" + secrets.token_hex(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def key_prefix(raw: str) -> str:
    """What a person sees to tell keys apart: `sk-1a2b3c4d`."""
    return raw[:11]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def normalize_email(email: object) -> str:
    if not isinstance(email, str) or not EMAIL_PATTERN.match(email.strip()):
        raise BadRequest("email must be an address like dev@example.com", param="email")
    return email.strip().lower()


def check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("password must be a string of at least 8 characters", param="password")
    return password


def parse_networks(cidrs: Iterable[str] | None) -> tuple[IpNetwork, ...] | None:
    if cidrs is None:
        return None
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            raise BadRequest(
                f"{cidr!r} is not an IP address or CIDR block (write e.g. 203.0.113.0/24)",
                param="ip_allowlist",
            ) from None
    return tuple(out)


def ip_allowed(networks: tuple[IpNetwork, ...] | None, client_ip: str) -> bool:
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(ip in net for net in networks)


@dataclass(frozen=True, slots=True)
class KeyOptions:
    """What an operator may set on a key; None means no restriction."""

    name: str = ""
    models: tuple[str, ...] | None = None
    ip_allowlist: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    daily_cap: int | None = None
    rpm: int | None = None

    def __post_init__(self) -> None:
        parse_networks(self.ip_allowlist)  # refuse a bad CIDR when the key is made, not when used
        if self.rpm is not None and self.rpm < 1:
            raise BadRequest("rpm must be a positive whole number of requests per minute", param="rpm")
        if self.daily_cap is not None and self.daily_cap < 0:
            raise BadRequest("daily_cap must not be negative", param="daily_cap")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the hot path needs it, cached in memory by hash."""

    id: int
    account_id: int
    name: str
    prefix: str
    allowed_models: frozenset[str] | None
    networks: tuple[IpNetwork, ...] | None
    daily_cap: int | None
    rpm: int | None
    expires_at: datetime | None
    revoked: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        models = orjson.loads(row.allowed_models) if row.allowed_models else None
        cidrs = orjson.loads(row.ip_allowlist) if row.ip_allowlist else None
        created = as_utc(row.created_at)
        assert created is not None
        return cls(
            id=row.id,
            account_id=row.account_id,
            name=row.name,
            prefix=row.prefix,
            allowed_models=frozenset(models) if models is not None else None,
            networks=parse_networks(cidrs),
            daily_cap=row.daily_cap,
            rpm=row.rpm,
            expires_at=as_utc(row.expires_at),
            revoked=row.revoked_at is not None,
            created_at=created,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": sorted(self.allowed_models) if self.allowed_models is not None else None,
            "ip_allowlist": [str(n) for n in self.networks] if self.networks is not None else None,
            "daily_cap": self.daily_cap,
            "rpm": self.rpm,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "created_at": self.created_at.isoformat(),
        }


# --- rows ----------------------------------------------------------------------------------


async def note_change(conn: AsyncConnection, kind: str, ref_id: int) -> None:
    """Tell every gateway sharing this database to drop its cached copy of `ref_id`."""
    await conn.execute(insert(cache_events).values(kind=kind, ref_id=ref_id, created_at=utcnow()))


async def insert_account(
    conn: AsyncConnection,
    *,
    email: str,
    name: str = "",
    password: str | None = None,
    trial_calls: int = 0,
    kind: str = "user",
) -> int:
    result = await conn.execute(
        insert(accounts)
        .values(
            email=email,
            name=name,
            password_hash=hash_password(password) if password is not None else None,
            kind=kind,
            trial_calls_left=trial_calls,
            created_at=utcnow(),
        )
        .returning(accounts.c.id)
    )
    return int(result.scalar_one())


async def insert_key(conn: AsyncConnection, account_id: int, options: KeyOptions) -> tuple[int, str]:
    """A new key for `account_id`: (key id, the raw key, shown once and never stored)."""
    raw = new_key()
    result = await conn.execute(
        insert(api_keys)
        .values(
            account_id=account_id,
            key_hash=hash_key(raw),
            prefix=key_prefix(raw),
            name=options.name,
            allowed_models=orjson.dumps(list(options.models)).decode() if options.models is not None else None,
            ip_allowlist=orjson.dumps(list(options.ip_allowlist)).decode()
            if options.ip_allowlist is not None
            else None,
            daily_cap=options.daily_cap,
            rpm=options.rpm,
            expires_at=options.expires_at,
            created_at=utcnow(),
        )
        .returning(api_keys.c.id)
    )
    return int(result.scalar_one()), raw


async def rotate_key(conn: AsyncConnection, key_id: int) -> str | None:
    """Give key `key_id` a new secret in place (same id, options and spend history); the old
    secret stops matching at once. None when there is no such live key."""
    raw = new_key()
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(key_hash=hash_key(raw), prefix=key_prefix(raw))
    )
    if result.rowcount != 1:
        return None
    await note_change(conn, "key", key_id)
    return raw


async def revoke_key(conn: AsyncConnection, key_id: int) -> bool:
    result = await conn.execute(
        update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    if result.rowcount != 1:
        return False
    await note_change(conn, "key", key_id)
    return True


async def key_by_hash(conn: AsyncConnection, key_hash: str) -> KeyRecord | None:
    row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
    return KeyRecord.from_row(row) if row is not None else None


async def keys_of(conn: AsyncConnection, account_id: int) -> list[KeyRecord]:
    rows = await conn.execute(
        select(api_keys)
        .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
        .order_by(api_keys.c.id)
    )
    return [KeyRecord.from_row(r) for r in rows]


async def key_owner(conn: AsyncConnection, key_id: int) -> int | None:
    row = (await conn.execute(select(api_keys.c.account_id).where(api_keys.c.id == key_id))).first()
    return int(row[0]) if row is not None else None

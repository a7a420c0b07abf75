"""OpenAI tool-call ids for Gemini function calls, carrying what Gemini needs back.

Gemini function calls often have no `id`, and Gemini 3 models attach a `thoughtSignature` that
must be echoed on the call when the conversation is sent again (PROTOCOLS.md §H.6). OpenAI
clients only keep the tool-call id, so both travel inside it; the gateway stays stateless.

Encoding (every character in `[A-Za-z0-9_-]`, which Anthropic clients also accept):

    call_<12 hex>                         no upstream id, no signature
    call_<12 hex>_<base64url(JSON)>       JSON = {"id"?: upstream id, "sig"?: thoughtSignature}

The 12 hex digits are a hash of the response id, candidate, part position, name and
arguments, so ids are unique within a conversation and stable for a recorded payload.
An id that does not parse this way (from another provider, or made up by the client) is
treated as foreign: it is not sent to Gemini, which matches function results by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from creditgate.providers.openai_shapes import b64url_decode, b64url_encode

_PREFIX = "call_"
_HASH_LEN = 12


@dataclass(frozen=True, slots=True)
class GeminiCallRef:
    upstream_id: str | None = None
    thought_signature: str | None = None


def encode_call_id(salt: str, name: str, arguments: str, upstream_id: str | None, thought_signature: str | None) -> str:
    digest = hashlib.sha256(f"{salt}\0{name}\0{arguments}".encode()).hexdigest()[:_HASH_LEN]
    extra: dict[str, str] = {}
    if upstream_id:
        extra["id"] = upstream_id
    if thought_signature:
        extra["sig"] = thought_signature
    if not extra:
        return _PREFIX + digest
    return f"{_PREFIX}{digest}_{b64url_encode(orjson.dumps(extra))}"


def decode_call_id(call_id: str) -> GeminiCallRef:
    start = len(_PREFIX) + _HASH_LEN
    if not call_id.startswith(_PREFIX) or len(call_id) <= start + 1 or call_id[start] != "_":
        return GeminiCallRef()
    raw = b64url_decode(call_id[start + 1 :])
    try:
        extra = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return GeminiCallRef()
    if not isinstance(extra, dict):
        return GeminiCallRef()
    upstream_id, signature = extra.get("id"), extra.get("sig")
    return GeminiCallRef(
        upstream_id if isinstance(upstream_id, str) else None,
        signature if isinstance(signature, str) else None,
    )

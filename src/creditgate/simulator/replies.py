"""Deterministic replies: the same request always gets the same text, tool call and counts.

A text reply of N tokens is ``"Simulated reply: "`` followed by words picked from a small
vocabulary by a hash of the last user message (and the choice index, so ``n=2`` gives two
different choices), ending with a full stop. It is cut to the output cap (``length``) and
then before the first stop sequence it contains (``stop``). JSON modes return a JSON object
instead; tool calls get arguments built from the tool's parameter schema.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from creditgate.simulator.tokens import count_tokens, split_pieces

_VOCABULARY = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "island", "juniper",
    "kestrel", "lagoon", "meadow", "nimbus", "orchard", "pebble", "quartz", "river", "summit", "tundra",
    "umber", "valley", "willow", "xenon", "yarrow", "zephyr", "anchor", "beacon", "canyon", "dune",
    "estuary", "forest", "glacier", "heron", "inlet", "jasper", "kelp", "lichen", "marsh", "nectar",
    "oasis", "prairie", "quill", "reef", "spruce", "thistle", "upland", "vista",
)  # fmt: skip
_PREFIX = ("Simulated", " reply", ":")

Finish = Literal["stop", "length", "stop_sequence", "tool"]
TextMode = Literal["text", "json_object", "json_schema"]


@lru_cache(maxsize=4096)
def reply_text(seed: str, tokens: int, index: int = 0) -> str:
    """The plain-text reply of exactly ``tokens`` tokens for a last user message ``seed``."""
    if tokens <= 0:
        return ""
    if tokens <= len(_PREFIX):
        return "".join(_PREFIX[:tokens])
    words = tokens - len(_PREFIX) - 1
    pieces = list(_PREFIX)
    digest = b""
    counter = 0
    while len(digest) < words:
        material = f"{index}:{counter}:{seed}".encode()
        digest += hashlib.blake2b(material, digest_size=64).digest()
        counter += 1
    pieces.extend(" " + _VOCABULARY[b % len(_VOCABULARY)] for b in digest[:words])
    pieces.append(".")
    return "".join(pieces)


def json_object_text(seed: str, tokens: int, index: int = 0) -> str:
    """A JSON object reply of exactly ``tokens`` tokens when ``tokens >= 9``, else ``{}``."""
    wrapper = 8  # { " reply " : " ... " }
    if tokens <= wrapper:
        return "{}"
    return orjson.dumps({"reply": reply_text(seed, tokens - wrapper, index)}).decode()


def value_for_schema(schema: Any, name: str = "value") -> Any:
    """A minimal JSON value of the schema's type: required object properties filled in.

    Understands JSON Schema and Gemini's upper-case ``type`` names; ``enum``/``const`` win,
    ``anyOf``/``oneOf`` take their first branch.
    """
    if not isinstance(schema, dict):
        return "simulated"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for union in ("anyOf", "oneOf", "any_of"):
        branches = schema.get(union)
        if isinstance(branches, list) and branches:
            return value_for_schema(branches[0], name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        return {key: value_for_schema(props.get(key), key) for key in required if isinstance(key, str)}
    if kind == "array":
        count = int(schema.get("minItems") or schema.get("min_items") or 0)
        return [value_for_schema(schema.get("items"), name) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return schema.get("minimum", 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"simulated {name}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    args: dict[str, Any]
    call_id: str  # a stable hash; protocols add their own prefix

    @property
    def tokens(self) -> int:
        return count_tokens(self.name) + count_tokens(self.arguments)


def make_tool_call(name: str, parameters: Any, seed: str, index: int = 0) -> ToolCall:
    """The deterministic call of tool ``name``: arguments from its parameter schema."""
    args = value_for_schema(parameters if isinstance(parameters, dict) else {"type": "object"}, name)
    if not isinstance(args, dict):
        args = {}
    arguments = orjson.dumps(args).decode()
    digest = hashlib.blake2b(f"{index}:{name}:{arguments}:{seed}".encode(), digest_size=9).hexdigest()
    return ToolCall(name, arguments, args, digest)


def argument_fragments(arguments: str) -> list[str]:
    """Split tool-call arguments into at least two non-empty fragments, as vendors stream them."""
    if len(arguments) < 2:
        return [arguments, ""] if arguments else ["{", "}"]
    step = max(1, len(arguments) // 3) if len(arguments) >= 3 else 1
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]


@dataclass(frozen=True, slots=True)
class Choice:
    """One planned completion: what to send and how it ended."""

    pieces: tuple[str, ...]  # text chunks of a stream, one token each
    text: str
    finish: Finish
    stop_sequence: str | None
    tool: ToolCall | None
    output_tokens: int  # visible tokens: text or tool call
    reasoning_tokens: int

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens + self.reasoning_tokens


def plan_choice(
    *,
    seed: str,
    tokens: int,
    cap: int | None,
    stops: list[str],
    mode: TextMode = "text",
    schema: Any = None,
    reasoning: int = 0,
    tool: ToolCall | None = None,
    index: int = 0,
) -> Choice:
    """Decide one choice. ``cap`` bounds visible plus reasoning tokens, like the real APIs do."""
    if cap is not None:
        reasoning = min(reasoning, max(cap, 0))
    room = None if cap is None else max(cap - reasoning, 0)
    if tool is not None and (room is None or tool.tokens <= room):
        return Choice((), "", "tool", None, tool, tool.tokens, reasoning)
    if mode == "json_object":
        text = json_object_text(seed, tokens, index)
    elif mode == "json_schema":
        text = orjson.dumps(value_for_schema(schema)).decode()
    else:
        text = reply_text(seed, tokens, index)
    pieces = split_pieces(text)
    finish: Finish = "stop"
    if room is not None and len(pieces) > room:
        pieces, finish = pieces[:room], "length"
    text = "".join(pieces)
    matched: str | None = None
    cut = len(text)
    for stop in stops:
        at = text.find(stop) if stop else -1
        if 0 <= at < cut:
            cut, matched = at, stop
    if matched is not None:
        text, finish = text[:cut], "stop_sequence"
        pieces = _cut_pieces(pieces, cut)
    return Choice(tuple(pieces), text, finish, matched, None, count_tokens(text), reasoning)


def _cut_pieces(pieces: list[str], cut: int) -> list[str]:
    out: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) <= cut:
            out.append(piece)
            used += len(piece)
            continue
        if cut > used:
            out.append(piece[: cut - used])
        break
    return out


ToolMode = Literal["none", "auto", "required"]


def pick_tool(
    tools: list[tuple[str, Any]],
    mode: ToolMode,
    *,
    forced: str | None,
    user_text: str,
    user_turn: bool,
) -> tuple[str, Any] | None:
    """Which tool (name, parameter schema) to call, if any.

    ``forced`` names a tool that must be called; ``required`` calls the first tool; ``auto``
    calls the first tool whose name the last user message mentions, but only while the user
    has the turn (a conversation ending in a tool result gets a text answer, so agent loops end).
    """
    if not tools or mode == "none":
        return None
    if forced is not None:
        return next((t for t in tools if t[0] == forced), None)
    if mode == "required":
        return tools[0]
    if not user_turn:
        return None
    lowered = user_text.lower()
    return next((t for t in tools if t[0] and t[0].lower() in lowered), None)

"""The counting rules other tests (and the gateway's hold) rely on."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgate.simulator.behaviour import DEFAULT_TOKENS
from creditgate.simulator.replies import json_object_text, plan_choice, reply_text, value_for_schema
from creditgate.simulator.tokens import (
    anthropic_prompt,
    anthropic_prompt_tokens,
    count_tokens,
    gemini_prompt_tokens,
    openai_prompt_tokens,
    split_pieces,
)


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("  ") == 0
    assert count_tokens("naïve café") == 2


def test_openai_prompt_rule() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi there"},
                    {"type": "image_url", "image_url": {"url": "data:" + "A" * 200}},
                ],
            },
        ],
    }
    assert openai_prompt_tokens(body) == 3 + (4 + 3) + (4 + 2 + 85)


def test_anthropic_and_gemini_prompt_rules() -> None:
    claude = {
        "model": "c",
        "system": "Be brief.",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi there"}],
    }
    assert anthropic_prompt_tokens(claude) == 3 + (4 + 3) + (4 + 2)
    gemini = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hi there"}]}],
    }
    assert gemini_prompt_tokens(gemini) == 3 + (4 + 3) + (4 + 2)


def test_anthropic_cache_prefix_ends_at_the_last_marked_block() -> None:
    body = {
        "model": "c",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "long shared context", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "question"}],
    }
    prompt = anthropic_prompt(body)
    assert prompt.cache_prefix_tokens == 3 + 4 + 3
    assert prompt.total == prompt.cache_prefix_tokens + 4 + 1
    other = {**body, "messages": [{"role": "user", "content": "another question"}]}
    assert anthropic_prompt(other).cache_key == prompt.cache_key


def test_reply_has_exactly_the_requested_tokens_and_is_deterministic() -> None:
    for n in (0, 1, 3, 4, 5, DEFAULT_TOKENS, 100):
        assert count_tokens(reply_text("hello", n)) == n
    assert reply_text("hello", 12) == reply_text("hello", 12)
    assert reply_text("hello", 12) != reply_text("goodbye", 12)
    assert reply_text("hello", 12).startswith("Simulated reply:")


def test_stream_pieces_are_one_token_each() -> None:
    text = reply_text("pieces", 30)
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert [count_tokens(p) for p in pieces] == [1] * 30


def test_json_object_reply_is_valid_json_of_the_requested_length() -> None:
    text = json_object_text("seed", 20)
    assert isinstance(orjson.loads(text), dict)
    assert count_tokens(text) == 20


def test_value_for_schema_fills_required_properties_with_their_types() -> None:
    schema = {
        "type": "object",
        "required": ["city", "days", "units", "tags", "ok"],
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"enum": ["c", "f"]},
            "tags": {"type": "array", "minItems": 1, "items": {"type": "STRING"}},
            "ok": {"type": "boolean"},
            "optional": {"type": "string"},
        },
    }
    value = value_for_schema(schema)
    assert set(value) == {"city", "days", "units", "tags", "ok"}
    assert isinstance(value["city"], str) and isinstance(value["days"], int)
    assert value["units"] == "c" and value["tags"] == [value["tags"][0]] and value["ok"] is True


def test_cap_covers_reasoning_and_stop_cuts_before_the_match() -> None:
    capped = plan_choice(seed="s", tokens=20, cap=8, stops=[], reasoning=5)
    assert (capped.output_tokens, capped.reasoning_tokens, capped.finish) == (3, 5, "length")
    stopped = plan_choice(seed="s", tokens=20, cap=None, stops=["reply"])
    assert stopped.text == "Simulated " and stopped.finish == "stop_sequence" and stopped.output_tokens == 1


_text = st.text(max_size=40)
_part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, st.text(max_size=120)),
)
_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "user", "assistant", "tool"]),
    st.one_of(_text, st.lists(_part, max_size=3)),
)
# integers a JSON body can carry (orjson writes 64 bits at most)
_schema: Any = st.recursive(
    st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.booleans(), st.none(), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(_message, min_size=1, max_size=4), tools=st.lists(_schema, max_size=2))
def test_prompt_count_never_exceeds_the_body_bytes(messages: list[Any], tools: list[Any]) -> None:
    body: dict[str, Any] = {"model": "m", "messages": messages}
    if tools:
        body["tools"] = tools
    assert openai_prompt_tokens(body) <= len(orjson.dumps(body))
    gemini = {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": m["content"]} if isinstance(m["content"], str) else {"inlineData": {"data": "x"}}],
            }
            for m in messages
        ]
    }
    assert gemini_prompt_tokens(gemini) <= len(orjson.dumps(gemini))

"""Gemini generateContent / streamGenerateContent on the raw wire (aiohttp)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from creditgate.simulator.tokens import count_tokens, gemini_prompt_tokens

from .sim_support import KEY, sse_events

CONTENTS = [{"role": "user", "parts": [{"text": "Tell me about marshes"}]}]
TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {"city": {"type": "STRING"}},
                    "required": ["city"],
                },
            }
        ]
    }
]
Schema = Callable[[Any, str], list[str]]


async def generate(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url + "/v1beta/models/sim-gemini:generateContent", json=body, headers=KEY) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_generate_content_counts_are_reproducible(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Schema
) -> None:
    body = {"contents": CONTENTS, "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    result = await generate(http, sim.url, body)
    assert schema_errors(result, "gemini.GenerateContentResponse") == []
    candidate = result["candidates"][0]
    text = candidate["content"]["parts"][0]["text"]
    assert candidate["finishReason"] == "STOP" and candidate["content"]["role"] == "model"
    usage = result["usageMetadata"]
    assert usage["candidatesTokenCount"] == count_tokens(text) == 12
    assert usage["promptTokenCount"] == gemini_prompt_tokens(body)
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 12
    assert result["modelVersion"] == "sim-gemini" and result["responseId"]


async def test_generation_config_limits_and_candidates(sim: Any, http: aiohttp.ClientSession) -> None:
    capped = await generate(http, sim.url, {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 4}})
    assert capped["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert capped["usageMetadata"]["candidatesTokenCount"] == 4
    stopped = await generate(http, sim.url, {"contents": CONTENTS, "generationConfig": {"stopSequences": [":"]}})
    assert stopped["candidates"][0]["content"]["parts"][0]["text"] == "Simulated reply"
    two = await generate(http, sim.url, {"contents": CONTENTS, "generationConfig": {"candidateCount": 2}})
    assert [c["index"] for c in two["candidates"]] == [0, 1]
    assert two["usageMetadata"]["candidatesTokenCount"] == 24


async def test_json_mode_and_images(sim: Any, http: aiohttp.ClientSession) -> None:
    config = {"responseMimeType": "application/json"}
    result = await generate(http, sim.url, {"contents": CONTENTS, "generationConfig": config})
    assert isinstance(json.loads(result["candidates"][0]["content"]["parts"][0]["text"]), dict)
    image = {
        "role": "user",
        "parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBOR" * 40}}, {"text": "what is this"}],
    }
    body = {"contents": [image]}
    result = await generate(http, sim.url, body)
    assert result["usageMetadata"]["promptTokenCount"] == gemini_prompt_tokens(body) == 3 + 4 + 85 + 3


async def test_function_calls_finish_with_stop(sim: Any, http: aiohttp.ClientSession, schema_errors: Schema) -> None:
    forced = {"functionCallingConfig": {"mode": "ANY"}}
    result = await generate(http, sim.url, {"contents": CONTENTS, "tools": TOOLS, "toolConfig": forced})
    assert schema_errors(result, "gemini.GenerateContentResponse") == []
    candidate = result["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert isinstance(candidate["content"]["parts"][0]["functionCall"]["args"]["city"], str)
    asked = [{"role": "user", "parts": [{"text": "call get_weather for Rome"}]}]
    auto = await generate(http, sim.url, {"contents": asked, "tools": TOOLS})
    assert "functionCall" in auto["candidates"][0]["content"]["parts"][0]
    answered = [
        *asked,
        {"role": "model", "parts": auto["candidates"][0]["content"]["parts"]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]},
    ]
    final = await generate(http, sim.url, {"contents": answered, "tools": TOOLS})
    assert "text" in final["candidates"][0]["content"]["parts"][0]


async def test_stream_is_incremental_with_usage_last(
    sim: Any, http: aiohttp.ClientSession, schema_errors: Schema
) -> None:
    url = sim.url + "/x/tokens=4,cached=2,reasoning=3/v1beta/models/sim-gemini:streamGenerateContent?alt=sse"
    async with http.post(url, json={"contents": CONTENTS}, headers=KEY) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(response)
    chunks = [data for _, data in events]
    for chunk in chunks:
        assert schema_errors(chunk, "gemini.GenerateContentResponse") == []
    texts = [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks]
    assert len([t for t in texts if t]) == 4
    assert all("usageMetadata" not in c for c in chunks[:-1])
    usage = chunks[-1]["usageMetadata"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert (usage["candidatesTokenCount"], usage["thoughtsTokenCount"], usage["cachedContentTokenCount"]) == (
        4,
        3,
        2,
    )
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 7


async def test_errors_use_google_rpc_status(sim: Any, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/v1beta/models/sim-gemini:generateContent"
    async with http.post(url, json={"contents": CONTENTS}) as response:
        assert response.status == 401
        assert (await response.json())["error"]["status"] == "UNAUTHENTICATED"
    async with http.post(url + "?key=k", json={"contents": [{"role": "user", "parts": []}]}) as response:
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["status"]) == (400, 400, "INVALID_ARGUMENT")
        assert "parts" in error["message"]
    for status, name in (
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ):
        failing = f"{sim.url}/x/status={status}/v1beta/models/sim-gemini:generateContent"
        async with http.post(failing, json={"contents": CONTENTS}, headers=KEY) as response:
            assert response.status == status
            assert (await response.json())["error"]["status"] == name

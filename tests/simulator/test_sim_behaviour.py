"""Behaviour prefixes: injected failures, cut and hung connections, usage knobs, the request log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from .sim_support import BEARER, KEY, sse_events

USER: list[Any] = [{"role": "user", "content": "Tell me about meadows"}]
CHAT = {"model": "m", "messages": USER}
OpenAIClient = Callable[..., openai.AsyncOpenAI]
AnthropicClient = Callable[..., anthropic.AsyncAnthropic]


async def test_unknown_key_is_a_400_naming_it(oai: OpenAIClient) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai("tokens=3,colour=blue").chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert "colour" in caught.value.message


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_fails_in_the_openai_envelope(oai: OpenAIClient, status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        await oai(f"status={status},retry_after=7").chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert caught.value.response.headers["retry-after"] == "7"  # type: ignore[attr-defined]
    assert "Simulated" in caught.value.message  # type: ignore[attr-defined]


async def test_status_529_is_anthropic_overloaded(claude: AnthropicClient) -> None:
    with pytest.raises(anthropic.OverloadedError):
        await claude("status=529").messages.create(model="c", max_tokens=5, messages=USER)
    with pytest.raises(anthropic.RateLimitError):
        await claude("status=429").messages.create(model="c", max_tokens=5, messages=USER)


async def test_fail_first_then_succeed_per_prefix(sim: Any, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/x/fail_first=2,id=raw/v1/chat/completions"
    statuses = []
    for _ in range(4):
        async with http.post(url, json=CHAT, headers=BEARER) as response:
            statuses.append(response.status)
    assert statuses == [503, 503, 200, 200]
    async with http.post(
        sim.url + "/x/fail_first=1,status=429,id=raw/v1/chat/completions", json=CHAT, headers=BEARER
    ) as response:
        assert response.status == 429
    async with http.post(
        sim.url + "/x/fail_first=1,status=429,id=raw/v1/chat/completions", json=CHAT, headers=BEARER
    ) as response:
        assert response.status == 200  # `status` picks the status; only the first request fails


async def test_fail_every_fails_each_nth_request_per_prefix(sim: Any, http: aiohttp.ClientSession) -> None:
    async def statuses(spec: str, n: int) -> list[int]:
        out = []
        for _ in range(n):
            async with http.post(f"{sim.url}/x/{spec}/v1/chat/completions", json=CHAT, headers=BEARER) as response:
                out.append(response.status)
        return out

    assert await statuses("fail_every=2,id=half", 6) == [200, 503, 200, 503, 200, 503]
    assert await statuses("fail_every=3,status=500,id=third", 6) == [200, 200, 500, 200, 200, 500]
    # a different prefix keeps its own count
    assert await statuses("fail_every=2,id=other", 1) == [200]


async def test_sdk_retry_succeeds_after_fail_first(oai: OpenAIClient, sim: Any, http: aiohttp.ClientSession) -> None:
    client = openai.AsyncOpenAI(
        base_url=sim.url + "/x/fail_first=1,retry_after=0.01,id=sdk/v1", api_key="k", max_retries=1
    )
    result = await client.chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert result.choices[0].finish_reason == "stop"
    async with http.get(sim.url + "/x/requests?n=2") as response:
        log = await response.json()
    assert [r["headers"].get("x-stainless-retry-count") for r in log] == ["0", "1"]


async def test_cut_after_breaks_the_stream_without_a_clean_end(oai: OpenAIClient, claude: AnthropicClient) -> None:
    stream = await oai("cut_after=3").chat.completions.create(**CHAT, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert len([r for r in received if r]) == 3
    with pytest.raises(Exception) as caught:  # the SDK lets its HTTP library's error through
        async with claude("cut_after=2").messages.stream(model="c", max_tokens=50, messages=USER) as s:
            await s.get_final_message()
    assert "incomplete chunked read" in str(caught.value)


async def test_cut_after_drops_a_non_stream_request(oai: OpenAIClient) -> None:
    with pytest.raises(openai.APIConnectionError):
        await oai("cut_after=0").chat.completions.create(**CHAT)  # type: ignore[arg-type]


async def test_cut_after_on_a_gemini_stream(sim: Any, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/x/cut_after=2/v1beta/models/g:streamGenerateContent?alt=sse"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(url, json=body, headers=KEY) as response:
            await response.read()


async def test_hang_never_answers(oai: OpenAIClient) -> None:
    with pytest.raises(openai.APITimeoutError):
        await oai("hang=1", timeout=0.3).chat.completions.create(**CHAT)  # type: ignore[arg-type]


async def test_ttft_delays_the_answer(oai: OpenAIClient) -> None:
    with pytest.raises(openai.APITimeoutError):
        await oai("ttft_ms=60000", timeout=0.3).chat.completions.create(**CHAT)  # type: ignore[arg-type]
    result = await oai("ttft_ms=20").chat.completions.create(**CHAT)  # type: ignore[arg-type]
    assert result.choices[0].message.content


async def test_tps_paces_the_stream(sim: Any, http: aiohttp.ClientSession) -> None:
    url = sim.url + "/x/tps=10,tokens=40/v1/chat/completions"
    seen = 0
    async with http.post(url, json={**CHAT, "stream": True}, headers=BEARER) as response:
        try:
            async with asyncio.timeout(0.8):
                async for line in response.content:
                    seen += b'"content":"' in line and b'"content":""' not in line
        except TimeoutError:
            pass
    assert 1 <= seen < 40


async def test_error_after_sends_an_in_stream_error(
    oai: OpenAIClient, claude: AnthropicClient, sim: Any, http: aiohttp.ClientSession
) -> None:
    stream = await oai("error_after=2").chat.completions.create(**CHAT, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError, match="Simulated"):
        async for _ in stream:
            pass
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with claude("error_after=2").messages.stream(model="c", max_tokens=50, messages=USER) as s:
            await s.get_final_message()
    assert "overloaded" in str(caught.value.body)
    url = sim.url + "/x/error_after=1/v1beta/models/g:streamGenerateContent?alt=sse"
    async with http.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}, headers=KEY) as response:
        events = await sse_events(response)
    assert len(events) == 2 and events[-1][1]["error"]["status"] == "INTERNAL"


async def test_usage_0_streams_never_report_usage(oai: OpenAIClient) -> None:
    stream = await oai("usage=0").chat.completions.create(
        **CHAT,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


async def test_cached_and_reasoning_tokens(oai: OpenAIClient, claude: AnthropicClient) -> None:
    result = await oai("cached=5,reasoning=7,tokens=4").chat.completions.create(**CHAT)  # type: ignore[arg-type]
    usage = result.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens_details.cached_tokens == 5
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.completion_tokens == 11
    message = await claude("cached=5").messages.create(model="c", max_tokens=50, messages=USER)
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.input_tokens + 5 == result.usage.prompt_tokens  # same prompt text, same rule


async def test_request_log_records_what_was_sent(sim: Any, http: aiohttp.ClientSession, oai: OpenAIClient) -> None:
    async with http.delete(sim.url + "/x/requests") as response:
        assert response.status == 204
    await oai("tokens=2").chat.completions.create(**CHAT, user="alice")  # type: ignore[arg-type]
    async with http.get(sim.url + "/x/tokens=2/x/requests?n=5") as response:
        log = await response.json()
    assert len(log) == 1
    entry = log[0]
    assert entry["method"] == "POST" and entry["path"] == "/x/tokens=2/v1/chat/completions"
    assert entry["headers"]["authorization"] == "Bearer test-key"
    assert entry["body"] == {**CHAT, "user": "alice"}


async def test_index_page_and_server_header_say_simulator(sim: Any, http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + "/") as response:
        page = await response.text()
        assert response.headers["Server"] == "creditgate-simulator"
    assert "simulator" in page.lower() and "not a language model" in page

"""The hot path, top to bottom, for every chat request in every dialect:

    authenticate -> parse -> resolve the model(s) -> quote a true upper bound -> hold it
    -> call an upstream, failing over before the first byte -> relay the answer
    -> settle the actual cost (durable) -> the last byte to the client

`Pipeline.chat` owns that sequence. Everything it calls is small and named after what it
does; wire formats live in `dialects/` and `providers/`, money in `billing`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import orjson

from creditgate.billing import Billing, Outcome, OutcomeStatus, Principal, Reservation
from creditgate.canonical import JSON, ChatRequest, Usage
from creditgate.catalog import Catalog, CatalogModel, Deployment
from creditgate.config import BillingConfig
from creditgate.dialects.base import Dialect, StreamEncoder
from creditgate.dialects.openai import count_images
from creditgate.errors import BadRequest, Forbidden, GatewayError, UpstreamError
from creditgate.metrics import Metrics
from creditgate.money import ceil_div, format_amount, json_amount
from creditgate.providers.base import Provider, StreamDecoder
from creditgate.routing import Router
from creditgate.routing.router import Attempt
from creditgate.sse import SSEParser
from creditgate.upstream import UpstreamPool, UpstreamResponse

log = logging.getLogger("creditgate.pipeline")

JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


@dataclass(slots=True)
class OpenStream:
    """An upstream stream that has produced its first canonical chunks."""

    model: CatalogModel
    deployment: Deployment
    response: UpstreamResponse
    body: AsyncIterator[bytes]
    parser: SSEParser
    decoder: StreamDecoder
    first: list[JSON]
    attempt: Attempt | None = None
    ttft_ms: float = 0.0


def decode_json(raw: bytes) -> JSON:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(character {exc.pos})"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def text_bytes(chunk: JSON) -> int:
    """UTF-8 bytes of model output in a canonical chunk (text, reasoning, tool arguments)."""
    n = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key in ("content", "reasoning_content"):
            value = delta.get(key)
            if isinstance(value, str):
                n += len(value.encode())
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                n += len(str(fn.get("name") or "").encode()) + len(str(fn.get("arguments") or "").encode())
    return n


def has_output(chunk: JSON) -> bool:
    """Whether a canonical chunk carries part of the answer (text, reasoning, a tool call) or
    its finish reason, as opposed to a role or usage alone."""
    if text_bytes(chunk):
        return True
    return any(isinstance(c, dict) and c.get("finish_reason") for c in chunk.get("choices") or ())


def output_cap(request: ChatRequest, model: CatalogModel) -> int:
    """The most output tokens per choice that `model` may be asked for: the client's maximum,
    lowered to the model's. The hold is quoted on it, and every upstream is held to it."""
    return min(request.max_output_tokens or model.max_output_tokens, model.max_output_tokens)


def capped(request: ChatRequest, model: CatalogModel) -> ChatRequest:
    """The request as one deployment of `model` gets it: with the output cap the hold covers."""
    cap = output_cap(request, model)
    return request if request.max_output_tokens == cap else replace(request, max_output_tokens=cap)


def same_stream(usage_chunk: JSON, first: list[JSON]) -> JSON:
    """The usage chunk with the id, created time and fingerprint of the stream's other chunks
    (clients group chunks by id)."""
    head = first[0] if first else {}
    for key in ("id", "created", "system_fingerprint"):
        if head.get(key) is not None:
            usage_chunk[key] = head[key]
    return usage_chunk


def completion_text_bytes(completion: JSON) -> int:
    n = 0
    for choice in completion.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            n += text_bytes({"choices": [{"delta": message}]})
    return n


def estimate_usage(request: ChatRequest, output_bytes: int) -> Usage:
    """Usage when the upstream reported none: about 4 bytes a token, rounded up. The prompt
    side counts message text only (not the JSON around it)."""
    prompt = 0
    for m in request.body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            prompt += len(content.encode())
        elif isinstance(content, list):
            prompt += sum(len(str(p.get("text") or "").encode()) for p in content if isinstance(p, dict))
    return Usage(prompt_tokens=ceil_div(prompt, 4), completion_tokens=ceil_div(output_bytes, 4))


class Pipeline:
    def __init__(
        self,
        *,
        catalog: Catalog,
        billing: Billing,
        billing_config: BillingConfig,
        router: Router,
        pool: UpstreamPool,
        providers: dict[str, Provider],
        metrics: Metrics,
    ) -> None:
        self.catalog = catalog
        self.billing = billing
        self.config = billing_config
        self.router = router
        self.pool = pool
        self.providers = providers
        self.metrics = metrics
        self._background: set[asyncio.Task[Any]] = set()
        self._counters: dict[str, tuple[Any, ...]] = {}

    # --- the hot path ---------------------------------------------------------------------

    async def chat(
        self, dialect: Dialect, raw: bytes, *, api_key: str | None, client_ip: str, request_id: str
    ) -> Reply:
        started = time.perf_counter()
        principal = await self.billing.authenticate(api_key, client_ip)
        request = dialect.parse(decode_json(raw))
        request.body_bytes = len(raw)
        models = self.resolve(request, principal)
        reservation = await self.billing.reserve(principal, models[0], self.quote(request, models), request_id)
        try:
            answer = await self.failover(
                request, models, self.open_stream if request.stream else self.call_once, request_id
            )
        except BaseException as exc:
            await self.settle_failure(reservation, models[0], exc, started)
            raise
        if request.stream:
            stream = self.relay(dialect.encoder(request), request, answer, reservation, started)
            return Reply(200, list(SSE_HEADERS), stream=stream)
        return await self.complete(dialect, request, answer, reservation, started)

    async def complete(
        self,
        dialect: Dialect,
        request: ChatRequest,
        answer: tuple[CatalogModel, Deployment, JSON],
        reservation: Reservation,
        started: float,
    ) -> Reply:
        model, deployment, completion = answer
        usage = Usage.from_openai(completion.get("usage"))
        estimated = usage is None
        if usage is None:
            usage = estimate_usage(request, completion_text_bytes(completion))
        cost = await self.billing.settle(
            reservation, Outcome(model, deployment.key, usage, estimated, "ok", _ms_since(started))
        )
        self.count(model, usage, cost)
        completion["model"] = model.id
        wire_usage = usage.to_openai() if estimated else completion["usage"]
        wire_usage["cost"] = json_amount(cost)
        completion["usage"] = wire_usage
        body = orjson.dumps(dialect.render(completion))
        return Reply(200, [JSON_TYPE, (b"x-creditgate-cost", format_amount(cost).encode())], body)

    async def relay(
        self,
        encoder: StreamEncoder,
        request: ChatRequest,
        s: OpenStream,
        reservation: Reservation,
        started: float,
    ) -> AsyncIterator[bytes]:
        """Pass chunks on one by one as they arrive; hold back the usage chunk, settle, then
        send it and the terminator. Disconnects and cuts are billed for what was produced."""
        usage: Usage | None = None
        produced = 0
        status: OutcomeStatus = "ok"
        failure: UpstreamError | None = None
        model_id = s.model.id
        include_usage = request.include_usage

        def forward(chunk: JSON) -> bytes | None:
            nonlocal usage, produced
            reported = chunk.get("usage")
            if reported:
                usage = Usage.from_openai(reported)
                if not chunk.get("choices"):
                    return None
            if reported is not None and not include_usage:
                del chunk["usage"]
            elif reported:
                chunk["usage"] = None
            chunk["model"] = model_id
            produced += text_bytes(chunk)
            return encoder.chunk(chunk)

        try:
            for chunk in s.first:
                out = forward(chunk)
                if out:
                    yield out
            try:
                async for data in s.body:
                    for event in s.parser.feed(data):
                        for chunk in s.decoder.feed(event.event, event.data):
                            out = forward(chunk)
                            if out:
                                yield out
                for event in s.parser.close():
                    for chunk in s.decoder.feed(event.event, event.data):
                        out = forward(chunk)
                        if out:
                            yield out
                for chunk in s.decoder.finish():
                    out = forward(chunk)
                    if out:
                        yield out
            except UpstreamError as err:
                status, failure = "cut", err
                log.warning("stream from %s failed after the first byte: %s", s.deployment.key, err.message)
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: bill what was produced, off the request's task.
            s.response.close()
            self.verdict(s, None, None)
            self.spawn(self.settle_stream(reservation, s, request, usage, produced, "disconnected", started))
            raise
        s.response.close()
        self.verdict(s, failure, usage)
        try:
            _, usage_chunk = await asyncio.shield(
                self.settle_stream(reservation, s, request, usage, produced, status, started)
            )
        except Exception as exc:
            log.exception("settlement failed")
            yield encoder.error(
                GatewayError(
                    f"the charge for this request could not be recorded; the response is void ({type(exc).__name__})"
                ),
                reservation.request_id,
            )
            return
        if failure is not None:
            yield encoder.error(failure, reservation.request_id)
        else:
            yield encoder.end(same_stream(usage_chunk, s.first))

    def verdict(self, s: OpenStream, failure: UpstreamError | None, usage: Usage | None) -> None:
        """Tell the router how a stream's deployment did, now that the stream is over."""
        if s.attempt is None:
            return
        if failure is not None:
            self.router.failed(s.attempt, failure, mid_stream=True)
        else:
            self.router.succeeded(
                s.attempt,
                latency_ms=s.ttft_ms,
                ttft_ms=s.ttft_ms,
                output_tokens=usage.completion_tokens if usage else None,
            )

    async def settle_stream(
        self,
        reservation: Reservation,
        s: OpenStream,
        request: ChatRequest,
        usage: Usage | None,
        produced: int,
        status: OutcomeStatus,
        started: float,
    ) -> tuple[int, JSON]:
        estimated = usage is None
        if usage is None:
            usage = estimate_usage(request, produced)
        cost = await self.billing.settle(
            reservation, Outcome(s.model, s.deployment.key, usage, estimated, status, _ms_since(started))
        )
        self.count(s.model, usage, cost)
        wire = usage.to_openai()
        wire["cost"] = json_amount(cost)
        chunk = {
            "id": f"chatcmpl-{reservation.request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": s.model.id,
            "choices": [],
            "usage": wire,
        }
        return cost, chunk

    # --- steps ----------------------------------------------------------------------------

    def resolve(self, request: ChatRequest, principal: Principal) -> list[CatalogModel]:
        """The catalog models to try, in order. A model named outright that the caller may not
        use is refused with the reason; virtual `auto-*` models choose among permitted ones."""
        named = self.catalog.get(request.model)
        if named is not None:
            reason = self.billing.refusal(principal, named)
            if reason:
                raise Forbidden(reason, param="model")
            if request.has_images and not named.vision:
                vision = ", ".join(m.id for m in self.catalog if m.vision) or "none configured"
                raise BadRequest(
                    f"model {named.id!r} does not accept images; models that do: {vision}", param="messages"
                )
        return self.router.resolve(request, lambda m: self.billing.refusal(principal, m) is None)

    def quote(self, request: ChatRequest, models: list[CatalogModel]) -> int:
        """A true upper bound of the cost, in micros: a token is at least one byte of the
        request body, plus allowances per message and per image; output is bounded by the
        requested maximum (or the model's), times the number of choices."""
        cfg = self.config
        messages = request.body.get("messages") or ()
        prompt = request.body_bytes + cfg.message_overhead_tokens * (len(messages) + 1)
        if request.has_images:
            prompt += cfg.image_tokens * count_images(list(messages))
        hold = 0
        for m in models:
            out = output_cap(request, m) * request.choices
            hold = max(hold, m.price.bound(prompt_tokens=prompt, completion_tokens=out))
        return hold

    async def failover(
        self,
        request: ChatRequest,
        models: list[CatalogModel],
        once: Callable[[ChatRequest, CatalogModel, Deployment], Coroutine[Any, Any, Any]],
        request_id: str,
    ) -> Any:
        """Try deployments in the router's order until one answers; fail over only on errors
        another deployment could cure, and only before the first byte reached the client."""
        tried = 0
        last: UpstreamError | None = None
        for model, deployment in self.router.attempts(models):
            tried += 1
            attempt = self.router.started(deployment, model=model, request_id=request_id)
            t0 = time.perf_counter()
            try:
                result = await once(request, model, deployment)
            except UpstreamError as err:
                self.router.failed(attempt, err)
                last = err
                if not self.router.should_fail_over(err):
                    raise
                continue  # the router logged and counted the failover
            except BaseException:
                self.router.cancelled(attempt)
                raise
            elapsed = (time.perf_counter() - t0) * 1000
            if isinstance(result, OpenStream):
                # The verdict on a stream waits for its end (`relay`): it may still be cut.
                result.attempt, result.ttft_ms = attempt, elapsed
            else:
                self.router.succeeded(attempt, latency_ms=elapsed)
            return result
        raise self.router.exhausted(tried, last, models)

    async def call_once(
        self, request: ChatRequest, model: CatalogModel, deployment: Deployment
    ) -> tuple[CatalogModel, Deployment, JSON]:
        provider = self.providers[deployment.provider.type]
        resp = await self.pool.post(deployment.provider, provider.build_request(capped(request, model), deployment))
        data = await resp.read()
        if resp.status >= 400:
            raise provider.parse_error(resp.status, data, resp.retry_after)
        return model, deployment, provider.parse_response(data, deployment)

    async def open_stream(self, request: ChatRequest, model: CatalogModel, deployment: Deployment) -> OpenStream:
        provider = self.providers[deployment.provider.type]
        resp = await self.pool.post(deployment.provider, provider.build_request(capped(request, model), deployment))
        if resp.status >= 400:
            raise provider.parse_error(resp.status, await resp.read(), resp.retry_after)
        parser, decoder = SSEParser(), provider.stream_decoder(request, deployment)
        body = resp.chunks()
        first: list[JSON] = []
        try:
            # Nothing reaches the client before the first piece of the answer, so a stream
            # that breaks before it can still fail over.
            while not any(map(has_output, first)):
                try:
                    data = await anext(body)
                except StopAsyncIteration:
                    first.extend(c for e in parser.close() for c in decoder.feed(e.event, e.data))
                    first.extend(decoder.finish())
                    break
                for event in parser.feed(data):
                    first.extend(decoder.feed(event.event, event.data))
        except BaseException:
            resp.close()
            raise
        return OpenStream(model, deployment, resp, body, parser, decoder, first)

    async def settle_failure(
        self, reservation: Reservation, model: CatalogModel, exc: BaseException, started: float
    ) -> None:
        """Release the hold of a request that produced nothing; record why it failed."""
        message = exc.message if isinstance(exc, GatewayError) else type(exc).__name__
        outcome = Outcome(model, None, None, False, "error", _ms_since(started), error=message)
        try:
            await asyncio.shield(self.billing.settle(reservation, outcome))
        except Exception:
            log.exception("could not release the hold of %s", reservation.request_id)

    def count(self, model: CatalogModel, usage: Usage, cost: int) -> None:
        counters = self._counters.get(model.id)
        if counters is None:  # label children are looked up once per model
            tokens = self.metrics.tokens
            counters = self._counters[model.id] = tuple(
                [tokens.labels(model.id, kind) for kind in ("prompt", "completion", "cached", "reasoning")]
                + [self.metrics.cost_micros.labels(model.id)]
            )
        prompt, completion, cached, reasoning, cost_micros = counters
        prompt.inc(usage.prompt_tokens)
        completion.inc(usage.completion_tokens)
        if usage.cached_tokens:
            cached.inc(usage.cached_tokens)
        if usage.reasoning_tokens:
            reasoning.inc(usage.reasoning_tokens)
        cost_micros.inc(cost)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background settlements (disconnected streams) at shutdown."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)

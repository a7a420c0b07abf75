"""The upstream simulator: a real HTTP server that speaks the OpenAI Chat Completions, Anthropic
Messages and Gemini generateContent wire protocols with deterministic, clearly simulated replies.

It is the upstream for the demo, the tests and the benchmarks. Behaviour (latency, token rate,
reply length, failures, cut streams) is chosen per request by a path prefix such as
``/x/ttft_ms=200,tps=50/v1/chat/completions``; see ``behaviour.py``. Token counts follow the
rules in ``tokens.py`` so that tests can reproduce every usage number from the request alone:
``count_tokens(text)`` counts matches of ``\\w+|[^\\w\\s]``, and ``openai_prompt_tokens``,
``anthropic_prompt_tokens`` and ``gemini_prompt_tokens`` count a parsed request body (3 + per
message 4 + its tokens, attachments ``min(85, len(reference))``, plus the tool definitions).
Reply text is ``"Simulated reply: ..."``, exactly ``tokens`` tokens long unless capped or stopped.

    handle = await start()            # in-process, on a free port
    OpenAI(base_url=handle.url + "/v1", api_key="anything")
    Anthropic(base_url=handle.url, api_key="anything")
    await handle.close()
"""

from creditgate.simulator.server import SimulatorHandle, create_app, serve, start

__all__ = ["SimulatorHandle", "create_app", "serve", "start"]

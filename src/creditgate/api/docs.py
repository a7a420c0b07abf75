"""The OpenAPI document of the public API (`/openapi.json`) and a self-contained docs page
(`/docs`) that renders it with no external scripts."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from creditgate import __version__

ERROR = {"$ref": "#/components/schemas/Error"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _op(
    summary: str,
    description: str,
    *,
    auth: bool = True,
    body: str | None = None,
    errors: tuple[int, ...] = (400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
    streams: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}}
            | ({"content": {"application/json": {}, "text/event-stream": {}}} if streams else {}),
            **{str(s): {"description": "error", "content": {"application/json": {"schema": ERROR}}} for s in errors},
        },
    }
    if auth:
        op["security"] = BEARER
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": orjson.loads(body)}},
        }
    return op


def openapi() -> dict[str, Any]:
    chat_example = '{"model": "deepseek/deepseek-chat", "messages": [{"role": "user", "content": "Hello"}]}'
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditgate",
            "version": __version__,
            "description": "One endpoint in front of many LLM upstreams, billed per token from a prepaid "
            "wallet. Speaks the OpenAI and Anthropic dialects; amounts are in the operator's currency.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                }
            },
        },
        "paths": {
            "/v1/chat/completions": {
                "post": _op(
                    "Chat completion (OpenAI dialect)",
                    "OpenAI Chat Completions, streaming and not, tools, JSON mode. Unknown fields pass through to "
                    "OpenAI-compatible upstreams. `models: [...]` lists fallback models; `auto`, `auto-cheap`, "
                    "`auto-best`, `auto-code`, `auto-fast`, `auto-free` route by policy. The response's "
                    "`usage.cost` and the `x-creditgate-cost` header carry the charge.",
                    body=chat_example,
                    streams=True,
                )
            },
            "/v1/messages": {
                "post": _op(
                    "Message (Anthropic dialect)",
                    "Anthropic Messages API, streaming and not; key as `x-api-key` or Bearer; any "
                    "`anthropic-version`. Errors use the Anthropic envelope.",
                    body='{"model": "anthropic/claude-3-haiku", "max_tokens": 256, '
                    '"messages": [{"role": "user", "content": "Hello"}]}',
                    streams=True,
                )
            },
            "/v1/models": {
                "get": _op(
                    "List models",
                    "The catalog in OpenAI's list format, with prices "
                    "per 1M tokens and context windows as extra fields.",
                    auth=False,
                    errors=(),
                )
            },
            "/api/models": {
                "get": _op(
                    "Models (simple)",
                    "Public model list: id, name, provider, context window, input/output cost per 1M tokens, vision.",
                    auth=False,
                    errors=(),
                )
            },
            "/v1/credits": {
                "get": _op(
                    "Balance", "Balance, held, available and credit lots of the key's account.", errors=(401, 403)
                )
            },
            "/v1/credits/transactions": {
                "get": _op(
                    "Transactions", "Newest first; `limit` (<= 1000) and `cursor` paginate.", errors=(400, 401, 403)
                )
            },
            "/auth/signup": {
                "post": _op(
                    "Sign up",
                    "Creates an account with its free trial calls and returns an API key (shown once).",
                    auth=False,
                    body='{"email": "dev@example.com", "password": "correct horse"}',
                    errors=(400, 409),
                )
            },
            "/health": {"get": _op("Liveness", 'Always `{"status":"ok"}`; touches nothing.', auth=False, errors=())},
            "/health/ready": {
                "get": _op("Readiness", "Checks the database (and Redis when configured).", auth=False, errors=(503,))
            },
        },
    }


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>creditgate API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
h1{margin-bottom:.2rem} .op{border:1px solid #d6dae3;border-radius:8px;margin:1rem 0;padding:.8rem 1rem}
.m{display:inline-block;min-width:3.5rem;font-weight:700;color:#fff;border-radius:4px;text-align:center;
padding:0 .4rem;margin-right:.5rem} .get{background:#2f7d4f} .post{background:#2b5fb3}
code,pre{background:#f3f4f7;border-radius:4px;padding:.1rem .3rem} pre{padding:.6rem;overflow:auto}
.lock{color:#8a5a00;font-size:.85rem}
</style></head><body>
<h1>creditgate API</h1><p id="desc"></p><p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>
<div id="ops"></div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(spec=>{
  document.getElementById('desc').textContent=spec.info.description+' (version '+spec.info.version+')';
  const root=document.getElementById('ops');
  for(const [path,ops] of Object.entries(spec.paths)){
    for(const [method,op] of Object.entries(ops)){
      const d=document.createElement('div');d.className='op';
      const h=document.createElement('div');
      const m=document.createElement('span');m.className='m '+method;m.textContent=method.toUpperCase();
      const c=document.createElement('code');c.textContent=path;h.append(m,c);
      if(op.security){const l=document.createElement('span');l.className='lock';
        l.textContent='  · needs Authorization: Bearer <key>';h.append(l);}
      const s=document.createElement('h3');s.textContent=op.summary;
      const p=document.createElement('p');p.textContent=op.description;d.append(h,s,p);
      const ex=op.requestBody&&op.requestBody.content['application/json'].example;
      if(ex){const pre=document.createElement('pre');pre.textContent=JSON.stringify(ex,null,2);d.append(pre);}
      root.append(d);
    }
  }
});
</script></body></html>
"""


def docs_routes() -> list[Route]:
    spec = orjson.dumps(openapi())

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(PAGE)

    return [Route("/openapi.json", openapi_json, methods=["GET"]), Route("/docs", docs, methods=["GET"])]

"""Canonical (OpenAI Chat) request -> Gemini `GenerateContentRequest` body.

Decisions:
- Tool parameters and JSON-schema response formats are sent as `parametersJsonSchema` /
  `responseJsonSchema`, which take plain JSON Schema. Converting to Gemini's OpenAPI-subset
  `Schema` would lose `additionalProperties`, `$ref` and friends, or fail on them.
- Tool results go in a `user` turn as `functionResponse` parts. Gemini requires the function
  name, which OpenAI tool messages lack, so it is recovered from the assistant tool call with
  the same id earlier in the conversation. A result that is not a JSON object is wrapped as
  `{"output": <text>}`.
- Call ids and thought signatures come back out of the tool-call id (`gemini_tool_ids`).
- Images: data URLs become `inlineData`. An https URL cannot be inlined without fetching it
  (providers do no I/O), so it is passed as `fileData.fileUri` with a MIME type guessed from
  the file extension; Gemini accepts this for URLs it can reach itself.
- Gemini rejects empty parts and empty turns, so both are dropped.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urlparse

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest
from creditgate.providers.gemini_tool_ids import decode_call_id
from creditgate.providers.openai_shapes import (
    content_parts,
    content_text,
    image_url_of,
    parse_arguments,
    parse_data_url,
)


def build_body(request: ChatRequest) -> JSON:
    body = request.body
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages must be an array", param="messages")
    system, contents = _convert_messages(messages)
    out: JSON = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = [{"functionDeclarations": tools}]
        config = _tool_config(body.get("tool_choice"))
        if config:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(request)
    if generation:
        out["generationConfig"] = generation
    return out


def _convert_messages(messages: list[Any]) -> tuple[list[JSON], list[JSON]]:
    names = _tool_call_names(messages)
    system: list[JSON] = []
    contents: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text.strip():
                system.append({"text": text})
            continue
        if role == "user":
            parts, turn_role = _user_parts(message.get("content"), where), "user"
        elif role == "assistant":
            parts, turn_role = _model_parts(message, where), "model"
        elif role == "tool":
            parts, turn_role = [_function_response(message, names, where)], "user"
        else:
            raise BadRequest(f"{where}.role {role!r} is not supported by this provider", param=f"{where}.role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn_role, "parts": parts})
    return system, contents


def _tool_call_names(messages: list[Any]) -> dict[str, str]:
    names: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(call.get("id"), str) and isinstance(fn.get("name"), str):
                names[call["id"]] = fn["name"]
    return names


def _user_parts(content: Any, where: str) -> list[JSON]:
    parts: list[JSON] = []
    for j, part in enumerate(content_parts(content, where)):
        kind = part.get("type")
        at = f"{where}.content[{j}]"
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image_part(image_url_of(part, at), at))
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str) or not data.startswith("data:"):
                raise BadRequest(f"{at}.file.file_data must be a data URL for this provider", param=at)
            mime, payload = parse_data_url(data, f"{at}.file.file_data")
            parts.append({"inlineData": {"mimeType": mime, "data": payload}})
        else:
            raise BadRequest(f"{at}: content type {kind!r} is not supported by this provider", param=at)
    return parts


def _image_part(url: str, where: str) -> JSON:
    if url.startswith("data:"):
        mime, data = parse_data_url(url, f"{where}.image_url.url")
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("https://", "http://")):
        guessed, _ = mimetypes.guess_type(urlparse(url).path)
        return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": url}}
    raise BadRequest(f"{where}.image_url.url must be an https or data URL", param=f"{where}.image_url.url")


def _model_parts(message: JSON, where: str) -> list[JSON]:
    parts: list[JSON] = []
    content = message.get("content")
    if content is not None:
        text = content_text(content)
        if text:
            parts.append({"text": text})
    for k, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"{where}.tool_calls[{k}].function.name is required", param=f"{where}.tool_calls")
        ref = decode_call_id(str(call.get("id") or ""))
        function_call: JSON = {"name": fn["name"], "args": parse_arguments(fn.get("arguments"))}
        if ref.upstream_id:
            function_call["id"] = ref.upstream_id
        part: JSON = {"functionCall": function_call}
        if ref.thought_signature:
            part["thoughtSignature"] = ref.thought_signature
        parts.append(part)
    return parts


def _function_response(message: JSON, names: dict[str, str], where: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or call_id not in names:
        raise BadRequest(
            f"{where}.tool_call_id does not match a tool call of an earlier assistant message",
            param=f"{where}.tool_call_id",
        )
    text = content_text(message.get("content"))
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        value = None
    response: JSON = value if isinstance(value, dict) else {"output": text}
    function_response: JSON = {"name": names[call_id], "response": response}
    ref = decode_call_id(call_id)
    if ref.upstream_id:
        function_response["id"] = ref.upstream_id
    return {"functionResponse": function_response}


def _tools(tools: Any) -> list[JSON]:
    out: list[JSON] = []
    if not isinstance(tools, list):
        return out
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise BadRequest(f"tools[{i}] must be a function tool with a name", param=f"tools[{i}]")
        declaration: JSON = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            declaration["description"] = fn["description"]
        schema = fn.get("parameters")
        if isinstance(schema, dict) and schema.get("properties"):
            declaration["parametersJsonSchema"] = _plain_schema(schema)
        out.append(declaration)
    return out


def _plain_schema(schema: JSON) -> JSON:
    """`$schema` names the dialect and is not part of the schema Gemini validates."""
    return {k: v for k, v in schema.items() if k != "$schema"}


def _tool_config(choice: Any) -> JSON | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _generation_config(request: ChatRequest) -> JSON:
    body = request.body
    config: JSON = {}
    for source, target in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if _number(body.get(source)):
            config[target] = body[source]
    if isinstance(body.get("seed"), int) and not isinstance(body.get("seed"), bool):
        config["seed"] = body["seed"]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or request.max_output_tokens
    if isinstance(max_tokens, int) and max_tokens > 0:
        # Held to the request's output cap (the pipeline sets it to what the hold covers).
        config["maxOutputTokens"] = min(max_tokens, request.max_output_tokens or max_tokens)
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    sequences = [s for s in sequences if isinstance(s, str) and s]
    if sequences:
        config["stopSequences"] = sequences
    if request.choices > 1:
        config["candidateCount"] = request.choices
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            config["responseJsonSchema"] = _plain_schema(schema)
    return config

"""Anthropic `MessageCreateParams` body -> canonical `ChatRequest` (an OpenAI Chat body).

Validation mirrors the errors the real API gives for the common mistakes (missing
`max_tokens`, empty text blocks, unknown roles), naming the field, so a client sees them
before credits are held. `tool_result` blocks become `role: tool` messages placed before
the rest of their user turn, because OpenAI needs every result straight after the assistant
turn that called the tools. `cache_control` stays on the converted parts and marks the
request as one that asks for prompt caching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from creditgate.canonical import JSON, ChatRequest
from creditgate.errors import BadRequest


@dataclass(slots=True)
class _Flags:
    images: bool = False
    cache: bool = False


def parse_request(body: JSON) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: field required (a model id string)", param="model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: field required", param="max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise BadRequest("max_tokens: must be a positive integer", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty array", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: must be a boolean", param="stream")

    flags = _Flags()
    out: list[JSON] = []
    system = body.get("system")
    if system is not None and system != "":
        parts = _text_parts(system, "system", flags)
        if parts:
            out.append({"role": "system", "content": _collapse(parts)})
    for i, message in enumerate(messages):
        out.extend(_message(message, f"messages.{i}", flags))

    chat: JSON = {"model": model, "messages": out, "max_tokens": max_tokens}
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    _sampling(body, chat)
    _tools(body, chat, flags)
    _output_format(body, chat)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
        chat["user"] = metadata["user_id"]
    return ChatRequest(
        body=chat,
        model=model,
        stream=stream,
        include_usage=stream,
        max_output_tokens=max_tokens,
        has_images=flags.images,
        cache_prompt=flags.cache,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _collapse(parts: list[JSON]) -> str | list[JSON]:
    """Plain text stays a plain string: some OpenAI-compatible vendors take nothing else."""
    if all(p["type"] == "text" and "cache_control" not in p for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) == 1 else "\n\n".join(p["text"] for p in parts)
    return parts


def _blocks(content: Any, where: str) -> list[JSON]:
    if isinstance(content, str):
        if not content.strip():
            raise BadRequest(f"{where}.content: text content must be non-empty", param=f"{where}.content")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise BadRequest(f"{where}.content: must be a string or a non-empty array of blocks", param=where)
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.content.{j}: must be a content block with a type", param=where)
    return content


def _text_part(block: JSON, where: str, flags: _Flags) -> JSON:
    text = block.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{where}.text: text content blocks must be non-empty", param=f"{where}.text")
    return _keep_cache_control({"type": "text", "text": text}, block, flags)


def _keep_cache_control(part: JSON, block: JSON, flags: _Flags) -> JSON:
    cache_control = block.get("cache_control")
    if isinstance(cache_control, dict):
        part["cache_control"] = cache_control
        flags.cache = True
    return part


def _text_parts(content: Any, where: str, flags: _Flags) -> list[JSON]:
    parts = []
    for j, block in enumerate(_blocks(content, where)):
        if block["type"] != "text":
            raise BadRequest(f"{where}.{j}: only text blocks are allowed here", param=where)
        parts.append(_text_part(block, f"{where}.{j}", flags))
    return parts


def _message(message: Any, where: str, flags: _Flags) -> list[JSON]:
    if not isinstance(message, dict):
        raise BadRequest(f"{where}: must be an object with role and content", param=where)
    role = message.get("role")
    if role == "user":
        return _user_turn(_blocks(message.get("content"), where), where, flags)
    if role == "assistant":
        content = message.get("content")
        if isinstance(content, str):
            return [{"role": "assistant", "content": content}]
        return [_assistant_turn(_blocks(content, where), where, flags)]
    raise BadRequest(f"{where}.role: must be 'user' or 'assistant', got {role!r}", param=f"{where}.role")


def _user_turn(blocks: list[JSON], where: str, flags: _Flags) -> list[JSON]:
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block["type"]
        if kind == "tool_result":
            tool_message, images = _tool_result(block, at, flags)
            tool_messages.append(tool_message)
            parts.extend(images)
        elif kind == "text":
            parts.append(_text_part(block, at, flags))
        elif kind == "image":
            parts.append(_image(block, at, flags))
        elif kind == "document":
            parts.append(_document(block, at, flags))
        elif kind not in ("thinking", "redacted_thinking"):
            raise BadRequest(f"{at}.type: {kind!r} blocks are not supported", param=f"{at}.type")
    if parts:
        tool_messages.append({"role": "user", "content": _collapse(parts)})
    return tool_messages


def _tool_result(block: JSON, where: str, flags: _Flags) -> tuple[JSON, list[JSON]]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise BadRequest(f"{where}.tool_use_id: field required", param=f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    images: list[JSON] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text" and isinstance(inner.get("text"), str):
                texts.append(inner["text"])
            elif kind == "image":
                images.append(_image(inner, f"{where}.content.{j}", flags))
            else:
                raise BadRequest(f"{where}.content.{j}: must be a text or image block", param=where)
    elif content is not None:
        raise BadRequest(f"{where}.content: must be a string or an array of blocks", param=where)
    message: JSON = {"role": "tool", "tool_call_id": tool_use_id, "content": "\n".join(texts)}
    if isinstance(block.get("cache_control"), dict):
        message["content"] = [_keep_cache_control({"type": "text", "text": message["content"]}, block, flags)]
    return message, images


def _image(block: JSON, where: str, flags: _Flags) -> JSON:
    source = block.get("source")
    if not isinstance(source, dict):
        raise BadRequest(f"{where}.source: field required", param=f"{where}.source")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise BadRequest(f"{where}.source: media_type and data are required", param=f"{where}.source")
        url = f"data:{media_type};base64,{data}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise BadRequest(f"{where}.source.type: must be 'base64' or 'url'", param=f"{where}.source.type")
    flags.images = True
    return _keep_cache_control({"type": "image_url", "image_url": {"url": url}}, block, flags)


def _document(block: JSON, where: str, flags: _Flags) -> JSON:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if isinstance(source, dict) and kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "application/pdf"
        part: JSON = {
            "type": "file",
            "file": {"file_data": f"data:{media_type};base64,{source['data']}", "filename": "document.pdf"},
        }
    elif isinstance(source, dict) and kind == "text" and isinstance(source.get("data"), str):
        part = {"type": "text", "text": source["data"]}
    else:
        raise BadRequest(f"{where}.source: only base64 and text documents are supported", param=f"{where}.source")
    return _keep_cache_control(part, block, flags)


def _assistant_turn(blocks: list[JSON], where: str, flags: _Flags) -> JSON:
    parts: list[JSON] = []
    calls: list[JSON] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block["type"]
        if kind == "text":
            parts.append(_text_part(block, at, flags))
        elif kind == "tool_use":
            name, call_id, tool_input = block.get("name"), block.get("id"), block.get("input", {})
            if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(tool_input, dict):
                raise BadRequest(f"{at}: tool_use blocks need id, name and an input object", param=at)
            arguments = orjson.dumps(tool_input).decode()
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise BadRequest(f"{at}.type: {kind!r} blocks are not supported in assistant turns", param=f"{at}.type")
    message: JSON = {"role": "assistant", "content": _collapse(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _sampling(body: JSON, chat: JSON) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or not 0 <= temperature <= 1:
            raise BadRequest("temperature: must be a number between 0 and 1", param="temperature")
        chat["temperature"] = temperature
    for key in ("top_p", "top_k"):
        value = body.get(key)
        if value is not None:
            if not _is_number(value):
                raise BadRequest(f"{key}: must be a number", param=key)
            chat[key] = value
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop_sequences: must be an array of strings", param="stop_sequences")
        if stop:
            chat["stop"] = stop


def _tools(body: JSON, chat: JSON, flags: _Flags) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("tools: must be an array", param="tools")
        converted = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise BadRequest(f"tools.{i}.name: field required", param=f"tools.{i}.name")
            if tool.get("type") not in (None, "custom"):
                raise BadRequest(f"tools.{i}.type: server tools are not supported", param=f"tools.{i}.type")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise BadRequest(f"tools.{i}.input_schema: field required", param=f"tools.{i}.input_schema")
            fn: JSON = {"name": tool["name"], "parameters": schema}
            if isinstance(tool.get("description"), str):
                fn["description"] = tool["description"]
            converted.append(_keep_cache_control({"type": "function", "function": fn}, tool, flags))
        if converted:
            chat["tools"] = converted
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequest("tool_choice.type: must be auto, any, tool (with name) or none", param="tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True and "tools" in chat:
        chat["parallel_tool_calls"] = False


def _output_format(body: JSON, chat: JSON) -> None:
    """Native structured output (`output_config.format`) -> OpenAI `response_format`."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"]},
        }

"""The shipped example configuration loads, and carries what the README promises."""

from __future__ import annotations

from pathlib import Path

from creditgate.config import EnvSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "creditgate.yaml"


def test_example_config_loads_with_real_providers_and_the_promised_models() -> None:
    settings = load_settings(str(EXAMPLE), env=EnvSettings(database_url=None, redis_url=None))
    f = settings.file
    types = {p.type for p in f.providers}
    assert types == {"openai", "anthropic", "gemini"}
    hosts = " ".join(p.base_url for p in f.providers)
    for vendor in ("api.openai.com", "api.deepseek.com", "api.mistral.ai", "dashscope", "moonshot", "11434"):
        assert vendor in hosts
    ids = {m.id for m in f.models}
    assert {
        "anthropic/claude-3-haiku",
        "google/gemini-2.5-flash",
        "deepseek/deepseek-chat-v3-0324",
        "mistralai/codestral-2501",
        "qwen/qwen-2.5-coder-32b-instruct",
        "deepseek/deepseek-chat",
        "qwen/qwen-turbo",
        "zhipu/glm-4-flash",
    } <= ids
    # openai-type base URLs end in /v1-style API roots; native ones are host roots.
    for p in f.providers:
        if p.type != "openai":
            assert p.base_url.count("/") == 2, p.base_url

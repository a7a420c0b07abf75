"""The virtual auto-* models, and what resolve() refuses."""

from __future__ import annotations

from typing import Any

import pytest

from creditgate.catalog import CatalogModel
from creditgate.config import ConfigError
from creditgate.errors import Forbidden, NoDeployment, NotFound

from .conftest import RouterFactory
from .support import Clock, catalog_of, chat, everyone, fail, model, serve

# price is the blended price per 1M tokens (input and output equal)
CATALOG = catalog_of(
    model("small", price="0.1", rank=1, context_window=8_000),
    model("mid", price="1", rank=5, context_window=128_000),
    model("coder", price="2", rank=4, tags=["code"], context_window=64_000),
    model("big", price="10", rank=9, context_window=200_000, vision=True),
    model("eye", price="0.5", rank=3, context_window=32_000, vision=True),
    model("gratis", price="0", rank=0, context_window=8_000),
)


def ids(models: list[CatalogModel]) -> list[str]:
    return [m.id for m in models]


def test_auto_cheap_orders_by_blended_price(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    assert ids(router.resolve(chat(model="auto-cheap"), everyone)) == ["gratis", "small", "eye", "mid"]


def test_blended_price_weighs_input_three_to_one(make_router: RouterFactory) -> None:
    catalog = catalog_of(
        {**model("in-heavy"), "price": {"input": "4", "output": "0"}},  # blended 3
        {**model("out-heavy"), "price": {"input": "0", "output": "8"}},  # blended 2
    )
    router = make_router(catalog)
    assert ids(router.resolve(chat(model="auto-cheap"), everyone)) == ["out-heavy", "in-heavy"]


def test_auto_best_orders_by_rank(make_router: RouterFactory) -> None:
    router = make_router(CATALOG, {"alternatives": 2})
    assert ids(router.resolve(chat(model="auto-best"), everyone)) == ["big", "mid", "coder"]


def test_auto_code_prefers_the_code_tag(make_router: RouterFactory) -> None:
    router = make_router(CATALOG, {"alternatives": 2})
    assert ids(router.resolve(chat(model="auto-code"), everyone)) == ["coder", "big", "mid"]


def test_auto_free_keeps_only_models_under_the_threshold(make_router: RouterFactory) -> None:
    assert ids(make_router(CATALOG).resolve(chat(model="auto-free"), everyone)) == ["gratis"]
    near_free = make_router(CATALOG, {"free_max_blended": "0.1"})
    assert ids(near_free.resolve(chat(model="auto-free"), everyone)) == ["gratis", "small"]


def test_auto_free_with_nothing_free_is_no_deployment(make_router: RouterFactory) -> None:
    router = make_router(catalog_of(model("paid", price="1")))
    with pytest.raises(NoDeployment, match=r"no model that fits is free \(blended price at most 0.00"):
        router.resolve(chat(model="auto-free"), everyone)


def test_auto_fast_follows_measured_speed_and_tries_unmeasured_models(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("slow", rank=9), model("quick", rank=1), model("new", rank=5))
    router = make_router(catalog, {"fast_prior_ms": 1000, "fast_typical_output_tokens": 100})

    def measure(model_id: str, ttft_ms: float, tokens_per_s: float) -> None:
        ((_, d),) = router.attempts([catalog.models[model_id]])
        latency = ttft_ms + 100 * 1000 / tokens_per_s
        router.succeeded(router.started(d), latency_ms=latency, ttft_ms=ttft_ms, output_tokens=100)

    measure("slow", ttft_ms=900, tokens_per_s=50)  # 2,900 ms for a typical reply
    measure("quick", ttft_ms=100, tokens_per_s=200)  # 600 ms
    # "new" has no measurement: it counts as 1,000 ms, between the two
    assert ids(router.resolve(chat(model="auto-fast"), everyone)) == ["quick", "new", "slow"]
    for _ in range(20):
        measure("quick", ttft_ms=3000, tokens_per_s=10)  # quick got slow
    assert ids(router.resolve(chat(model="auto-fast"), everyone))[0] == "new"


@pytest.mark.parametrize(
    ("request_kwargs", "chosen"),
    [
        ({"text": "Fix this:\n```python\nprint(1\n```"}, "coder"),
        ({"text": "why does def parse(x): fail?"}, "coder"),
        ({"text": "what is the capital of France?", "tools": [{"type": "function"}]}, "coder"),
        ({"text": "what is in this picture?", "has_images": True}, "big"),
        ({"text": "summarise this", "body_bytes": 400_000}, "mid"),  # ~100K tokens: small does not fit
        ({"text": "what is the function of the liver?"}, "gratis"),
    ],
    ids=["fences", "def", "tools", "images", "long", "default"],
)
def test_auto_reads_the_request(make_router: RouterFactory, request_kwargs: dict[str, Any], chosen: str) -> None:
    router = make_router(CATALOG, {"long_policy": "auto-cheap", "default": "auto-cheap"})
    assert ids(router.resolve(chat(model="auto", **request_kwargs), everyone))[0] == chosen


def test_auto_default_is_configurable(make_router: RouterFactory) -> None:
    router = make_router(CATALOG, {"default": "auto-best"})
    assert ids(router.resolve(chat(model="auto"), everyone))[0] == "big"
    assert router.metrics.route_decisions.labels(policy="auto-best", model="big")._value.get() == 1


def test_images_restrict_every_policy_to_vision_models(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    assert ids(router.resolve(chat(model="auto-cheap", has_images=True), everyone)) == ["eye", "big"]


def test_a_prompt_too_long_for_every_window_is_no_deployment(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    with pytest.raises(NoDeployment, match="longer than any model's context window"):
        router.resolve(chat(model="auto", body_bytes=4_000_000), everyone)


def test_policies_skip_models_the_caller_may_not_use(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    only_cheap = lambda m: m.price.blended < 1_000_000  # noqa: E731
    assert ids(router.resolve(chat(model="auto-best"), only_cheap)) == ["eye", "small", "gratis"]
    with pytest.raises(Forbidden, match="any model auto-best would choose"):
        router.resolve(chat(model="auto-best"), lambda m: False)


def test_auto_puts_models_with_a_ready_deployment_first(make_router: RouterFactory, clock: Clock) -> None:
    catalog = catalog_of(model("a", price="1"), model("b", price="2"), model("c", price="3"))
    router = make_router(catalog, {"alternatives": 1}, failure_threshold=1)
    serve(router, [catalog.models["a"], catalog.models["b"]], lambda d: fail(503))
    assert ids(router.resolve(chat(model="auto-cheap"), everyone)) == ["c", "a"]


def test_named_models_and_fallbacks(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    request = chat(model="mid", fallbacks=["small", "mid", "auto-best"])
    assert ids(router.resolve(request, everyone)) == ["mid", "small", "big", "coder", "eye"]
    not_small = lambda m: m.id != "small"  # noqa: E731
    assert ids(router.resolve(chat(model="mid", fallbacks=["small", "eye"]), not_small)) == ["mid", "eye"]
    with pytest.raises(Forbidden, match="may not use model 'small'"):
        router.resolve(chat(model="small"), not_small)


def test_fallbacks_without_vision_are_skipped_for_images(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    request = chat(model="big", fallbacks=["mid", "eye"], has_images=True)
    assert ids(router.resolve(request, everyone)) == ["big", "eye"]


def test_unknown_models_are_not_found(make_router: RouterFactory) -> None:
    router = make_router(CATALOG)
    with pytest.raises(NotFound, match=r"'gpt-9' does not exist; GET /v1/models lists") as info:
        router.resolve(chat(model="gpt-9"), everyone)
    assert info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(NotFound) as info:
        router.resolve(chat(model="mid", fallbacks=["nope"]), everyone)
    assert info.value.param == "models"


def test_virtual_models_are_listed_with_descriptions(make_router: RouterFactory) -> None:
    listed = make_router(CATALOG, {"default": "auto-fast"}).virtual_models()
    assert [v["id"] for v in listed] == ["auto", "auto-cheap", "auto-best", "auto-code", "auto-fast", "auto-free"]
    assert all(v["description"] for v in listed)
    assert "otherwise auto-fast" in listed[0]["description"]


def test_a_catalog_model_named_like_a_virtual_one_wins(make_router: RouterFactory) -> None:
    catalog = catalog_of(model("auto", price="5"), model("cheap", price="1"))
    router = make_router(catalog)
    assert ids(router.resolve(chat(model="auto"), everyone)) == ["auto"]
    assert "auto" not in [v["id"] for v in router.virtual_models()]


def test_unknown_auto_settings_are_a_config_error(make_router: RouterFactory) -> None:
    with pytest.raises(ConfigError, match=r"auto\.defualt"):
        make_router(CATALOG, {"defualt": "auto-best"})
    with pytest.raises(ConfigError, match=r"auto\.default"):
        make_router(CATALOG, {"default": "auto-magic"})

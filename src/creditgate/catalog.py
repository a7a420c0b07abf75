"""The model catalog compiled once at start-up: prices in micros, deployments bound to their
providers, lookups by id. Nothing here changes while the gateway runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from creditgate.config import FileConfig, ProviderConfig
from creditgate.money import Price, to_micros


@dataclass(frozen=True, slots=True)
class Deployment:
    """One way to serve a catalog model: a provider and the upstream's own model name."""

    key: str  # "<provider id>/<upstream model>", unique in the catalog
    provider: ProviderConfig
    upstream_model: str
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    name: str
    owned_by: str
    context_window: int
    max_output_tokens: int
    vision: bool
    tags: frozenset[str]
    rank: int
    price: Price
    deployments: tuple[Deployment, ...]
    created: int = field(default=0)

    @property
    def provider_label(self) -> str:
        return self.owned_by or self.id.split("/", 1)[0]


class Catalog:
    def __init__(self, config: FileConfig) -> None:
        providers = {p.id: p for p in config.providers}
        created = int(time.time())
        self.models: dict[str, CatalogModel] = {}
        for m in config.models:
            p = m.price
            price = Price(
                input=to_micros(p.input),
                output=to_micros(p.output),
                cached_input=to_micros(p.cached_input if p.cached_input is not None else p.input),
                cache_write_input=to_micros(p.cache_write_input if p.cache_write_input is not None else p.input),
            )
            deployments = tuple(
                Deployment(
                    key=f"{d.provider}/{d.model}",
                    provider=providers[d.provider],
                    upstream_model=d.model,
                    priority=d.priority,
                    weight=d.weight,
                )
                for d in m.deployments
            )
            self.models[m.id] = CatalogModel(
                id=m.id,
                name=m.name or m.id,
                owned_by=m.owned_by or m.id.split("/", 1)[0],
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                vision=m.vision,
                tags=m.tags,
                rank=m.rank,
                price=price,
                deployments=deployments,
                created=created,
            )
        self.providers = providers

    def get(self, model_id: str) -> CatalogModel | None:
        return self.models.get(model_id)

    def __iter__(self) -> Iterator[CatalogModel]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

"""The model catalogue as configured: names clients ask for, what workers call them, prices.

Kept apart from ModelCatalog (which also knows what workers serve right now)
so Settings can hold these models without importing the fleet. A catalogue
file may be YAML or JSON; inline entries from Settings come first, so an
environment variable can override one file entry by name without editing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from spotgate.gateway.request_limits import RequestLimits


class SpilloverTarget(BaseModel):
    """An OpenAI-compatible endpoint that serves a model when the fleet cannot.

    `base_url` is what the OpenAI SDK calls base_url, version segment included
    (`https://x.openai.azure.com/openai/v1`, `http://host:8000/v1`). The key
    itself never appears in config: `api_key_env` names the env var or secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    deployment: str | None = None
    api_key_env: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    price_in_per_1m: float = Field(default=0.0, ge=0)
    """What the endpoint charges us, per million prompt tokens (a spillover's cost)."""
    price_out_per_1m: float = Field(default=0.0, ge=0)


class ModelEntry(BaseModel):
    """One model clients may ask for, by `name` or any of its `aliases`.

    `served_name` is the name workers register under (vLLM's
    --served-model-name) when it differs from `name`. Prices are per million
    tokens and only rank models for `model: "auto"`; `auto: false` keeps a
    model (an embedding model, say) out of that choice. `limits` bound what
    one request may ask of this model's workers (None: the gateway's defaults).
    `mode` says which endpoints the model serves (LiteLLM's `model_info.mode`): `chat`
    (chat and text completions) or `embedding`; a request to another endpoint is a 400
    before any worker sees it. Unset: whatever its workers answer.
    `batch_price_in_per_1m` / `batch_price_out_per_1m` are what a Batch API line
    is sold at; unset, the price times the deployment's batch price share.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    context_length: int = Field(gt=0)
    price_in_per_1m: float = Field(default=0.0, ge=0)
    price_out_per_1m: float = Field(default=0.0, ge=0)
    batch_price_in_per_1m: float | None = Field(default=None, ge=0)
    batch_price_out_per_1m: float | None = Field(default=None, ge=0)
    pool: str = "default"
    served_name: str | None = None
    spillover: SpilloverTarget | None = None
    auto: bool = True
    hide_aliases: bool = False
    limits: RequestLimits | None = None
    groups: list[str] = Field(default_factory=list)
    """Model groups it belongs to: a key allowed a group may call every model in it."""
    mode: Literal["chat", "embedding"] | None = None

    @property
    def worker_model(self) -> str:
        """The name workers serve this model under: the routing key and the body's `model`."""
        return self.served_name or self.name

    @property
    def price(self) -> float:
        """What `auto` ranks by: input plus output price, as the task defines cheapest."""
        return self.price_in_per_1m + self.price_out_per_1m


_ENTRIES = TypeAdapter(list[ModelEntry])


def check_unique_names(entries: Iterable[ModelEntry], reserved: Iterable[str] = ()) -> None:
    """A name or alias must resolve to exactly one entry, or requests would route by luck."""
    owner: dict[str, str] = {name: "reserved" for name in reserved}
    for entry in entries:
        for name in (entry.name, *entry.aliases):
            if name in owner:
                raise ValueError(
                    f"model name {name!r} of {entry.name!r} is already used by {owner[name]!r}"
                )
            owner[name] = entry.name


def parse_catalogue(data: Any, source: str = "catalogue") -> list[ModelEntry]:
    """Entries from parsed YAML/JSON: a list of entries, or a mapping with a `models` list."""
    if isinstance(data, dict):
        data = data.get("models", [])
    if data is None:
        return []
    try:
        return _ENTRIES.validate_python(data)
    except ValueError as exc:
        raise ValueError(f"invalid model catalogue in {source}: {exc}") from exc


def read_catalogue_file(path: Path) -> list[ModelEntry]:
    """YAML for `.yaml`/`.yml` (pyyaml comes with uvicorn[standard]), JSON otherwise."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only needed when a YAML catalogue is configured

        data = yaml.safe_load(text)
    else:
        data = orjson.loads(text) if text.strip() else []
    return parse_catalogue(data, str(path))


def load_catalogue(inline: Iterable[ModelEntry], path: Path | None = None) -> list[ModelEntry]:
    """Inline entries (Settings.model_catalogue) plus the file's; an inline name wins."""
    entries = list(inline)
    if path is not None:
        taken = {entry.name for entry in entries}
        entries += [entry for entry in read_catalogue_file(path) if entry.name not in taken]
    check_unique_names(entries)
    return entries

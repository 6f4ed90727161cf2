"""The model catalogue: names, aliases and served names resolve; listing; config loading."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from spotgate.clock import ManualClock
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.catalog import ModelCatalog, ResolvedModel, rewrite_model
from spotgate.gateway.model_catalogue import ModelEntry, load_catalogue, parse_catalogue
from spotgate.settings import Settings

LLAMA = ModelEntry(
    name="llama-8b",
    aliases=["llama", "fast"],
    context_length=8192,
    price_in_per_1m=0.1,
    price_out_per_1m=0.2,
    pool="gpu-a",
    served_name="meta-llama/Llama-3.1-8B-Instruct",
)
QWEN = ModelEntry(name="qwen-32b", context_length=32768, hide_aliases=True, aliases=["q"])


def registry() -> WorkerRegistry:
    return WorkerRegistry(InMemoryWorkerStore(), ManualClock())


def test_names_aliases_and_served_names_resolve_to_the_entry() -> None:
    catalog = ModelCatalog(registry(), [], [LLAMA, QWEN])
    for asked in ("llama-8b", "llama", "fast", "meta-llama/Llama-3.1-8B-Instruct"):
        resolved = catalog.resolve(asked)
        assert resolved is not None
        assert (resolved.requested, resolved.name) == (asked, "llama-8b")
        assert resolved.served_name == "meta-llama/Llama-3.1-8B-Instruct"
        assert resolved.pool == "gpu-a" and resolved.entry is LLAMA
    qwen = catalog.resolve("qwen-32b")
    assert qwen == ResolvedModel("qwen-32b", "qwen-32b", "qwen-32b", "default", QWEN)


def test_models_workers_serve_without_an_entry_keep_working() -> None:
    reg = registry()
    reg.register("w1", pool="spot-x", model="sim-model", engine="sim", url="http://w1")
    catalog = ModelCatalog(reg, ["configured-only"], [LLAMA])
    served = catalog.resolve("sim-model")
    assert served == ResolvedModel("sim-model", "sim-model", "sim-model", "spot-x", None)
    assert served.spillover is None
    configured = catalog.resolve("configured-only")
    assert configured is not None and configured.pool == "default"
    assert catalog.resolve("nobody-serves-this") is None
    assert not catalog.knows("nobody-serves-this")
    assert catalog.knows("sim-model") and catalog.knows("fast")


def test_a_name_must_belong_to_one_entry() -> None:
    clash = ModelEntry(name="other", aliases=["fast"], context_length=10)
    with pytest.raises(ValueError, match="'fast'"):
        ModelCatalog(registry(), [], [LLAMA, clash])
    with pytest.raises(ValueError, match="'auto'"):
        ModelCatalog(registry(), [], [ModelEntry(name="auto", context_length=10)], auto_name="auto")


def test_listing_shows_names_and_aliases_like_litellm_but_not_served_names() -> None:
    reg = registry()
    reg.register("w1", pool="gpu-a", model=LLAMA.worker_model, engine="vllm", url="http://w1")
    reg.register("w2", pool="p", model="sim-model", engine="sim", url="http://w2")
    configured = ["configured-only", LLAMA.worker_model]
    catalog = ModelCatalog(reg, configured, [LLAMA, QWEN], auto_name="auto")
    ids = [card["id"] for card in catalog.listing()["data"]]
    assert ids == sorted(
        ["auto", "configured-only", "fast", "llama", "llama-8b", "qwen-32b", "sim-model"]
    )
    created = {card["id"]: card["created"] for card in catalog.listing()["data"]}
    worker = reg.get("w1")
    assert worker is not None
    assert created["llama"] == created["llama-8b"] == int(worker.registered_at)
    assert created["qwen-32b"] == 0


def test_auto_is_known_only_when_an_entry_may_be_chosen() -> None:
    no_auto = ModelEntry(name="embed", context_length=512, auto=False)
    assert not ModelCatalog(registry(), [], [no_auto], auto_name="auto").knows("auto")
    catalog = ModelCatalog(registry(), [], [QWEN, LLAMA, no_auto], auto_name="auto")
    assert catalog.knows("auto") and catalog.is_auto("auto")
    assert [e.name for e in catalog.auto_candidates()] == ["qwen-32b", "llama-8b"]


def test_rewrite_model_keeps_the_client_bytes_when_nothing_changes() -> None:
    raw = b'{"model": "m",  "messages": []}'
    assert rewrite_model(raw, orjson.loads(raw), "m") is raw
    assert orjson.loads(rewrite_model(raw, orjson.loads(raw), "served")) == {
        "model": "served",
        "messages": [],
    }


YAML = """
models:
  - name: llama-8b
    aliases: [llama]
    context_length: 8192
    price_in_per_1m: 0.1
    price_out_per_1m: 0.2
    pool: gpu-a
    served_name: meta-llama/Llama-3.1-8B-Instruct
    spillover:
      name: foundry
      base_url: https://x.openai.azure.com/openai/v1
      deployment: gpt-4o-mini
      api_key_env: FOUNDRY_KEY
      extra_headers: {x-ms-tag: spotgate}
  - name: qwen-32b
    context_length: 32768
"""


def test_catalogue_file_in_yaml_or_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "models.yaml"
    yaml_file.write_text(YAML)
    entries = load_catalogue([], yaml_file)
    assert [e.name for e in entries] == ["llama-8b", "qwen-32b"]
    target = entries[0].spillover
    assert target is not None and target.deployment == "gpt-4o-mini"
    assert target.api_key_env == "FOUNDRY_KEY" and target.extra_headers == {"x-ms-tag": "spotgate"}
    json_file = tmp_path / "models.json"
    json_file.write_bytes(orjson.dumps([e.model_dump() for e in entries]))
    assert load_catalogue([], json_file) == entries


def test_inline_entries_override_file_entries_by_name(tmp_path: Path) -> None:
    path = tmp_path / "models.yml"
    path.write_text(YAML)
    inline = ModelEntry(name="qwen-32b", context_length=4096)
    entries = load_catalogue([inline], path)
    assert [(e.name, e.context_length) for e in entries] == [("qwen-32b", 4096), ("llama-8b", 8192)]


def test_invalid_catalogue_says_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"name": "x"}]')
    with pytest.raises(ValueError, match=r"(?s)bad.json.*context_length"):
        load_catalogue([], path)
    with pytest.raises(ValueError):
        parse_catalogue([{"name": "x", "context_length": 1, "api_key": "inline secret"}])


def test_settings_take_the_catalogue_inline_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SPOTGATE_MODEL_CATALOGUE", '[{"name": "m", "context_length": 2048, "aliases": ["a"]}]'
    )
    monkeypatch.setenv("SPOTGATE_CATALOGUE_FILE", "/etc/spotgate/models.yaml")
    settings = Settings()
    assert settings.gateway.model_catalogue == [
        ModelEntry(name="m", context_length=2048, aliases=["a"])
    ]
    assert settings.gateway.catalogue_file == Path("/etc/spotgate/models.yaml")


def test_a_recently_gone_workers_model_stays_known_so_requests_wait_not_404() -> None:
    reg = registry()
    reg.register("w1", pool="spot-x", model="sim-model", engine="sim", url="http://w1")
    reg.mark_gone("w1", "evicted")
    resolved = ModelCatalog(reg, [], []).resolve("sim-model")
    assert resolved is not None and resolved.pool == "spot-x"

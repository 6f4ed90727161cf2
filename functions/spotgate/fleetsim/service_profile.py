"""How fast one worker of a model on a VM SKU serves: the numbers the simulator's workers obey.

One JSON file per model and SKU in `calibration/` (`<model>@<sku>.json`),
each number with its source: measured here (the sim engine, vLLM on CPU) or
a published vLLM result for a GPU SKU, cited. The service model they feed:

- A worker runs at most `max_concurrency` sequences (vLLM's max_num_seqs);
  more wait in its queue, first come first served.
- Prefill: a sequence's prompt is processed at `prefill_tokens_per_s`, one
  prompt after another (chunked prefill interleaves them with decoding, so
  decoding does not stop for it). Its first token comes `ttft_base_ms` plus
  its prompt's prefill time after its prefill starts.
- Decode: with `b` sequences decoding, each gets
  min(`decode_tokens_per_s_single`, `decode_tokens_per_s_max` / b) tokens a
  second: one stream alone is latency-bound, a full batch throughput-bound.
- A new VM serves `boot_to_ready_s` after it was asked for (allocation,
  image, driver, weights loaded, engine warm).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

PACKAGED = "calibration"


@dataclass(frozen=True)
class ServiceProfile:
    model: str
    sku: str
    max_concurrency: int
    prefill_tokens_per_s: float
    decode_tokens_per_s_single: float
    decode_tokens_per_s_max: float
    ttft_base_ms: float
    boot_to_ready_s: float
    sources: dict[str, str] = field(default_factory=dict)
    """Per field: where the number comes from (a URL and what it measured, or how it was
    measured here)."""

    def __post_init__(self) -> None:
        positive = (
            "max_concurrency",
            "prefill_tokens_per_s",
            "decode_tokens_per_s_single",
            "decode_tokens_per_s_max",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.key}: {name} must be positive")
        if self.ttft_base_ms < 0 or self.boot_to_ready_s < 0:
            raise ValueError(f"{self.key}: ttft_base_ms and boot_to_ready_s must be >= 0")
        if self.decode_tokens_per_s_max < self.decode_tokens_per_s_single:
            raise ValueError(f"{self.key}: the batch rate cannot be below one stream's")

    @property
    def key(self) -> str:
        return f"{self.model}@{self.sku}"

    def decode_rate(self, decoding: int) -> float:
        """Tokens a second each sequence gets while `decoding` sequences decode together."""
        if decoding <= 0:
            return self.decode_tokens_per_s_single
        return min(self.decode_tokens_per_s_single, self.decode_tokens_per_s_max / decoding)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<profile>") -> ServiceProfile:
        fields = cls.__dataclass_fields__
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        missing = [n for n in fields if n != "sources" and n not in data]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}")
        sources = data.get("sources") or {}
        undocumented = [
            n
            for n in fields
            if n not in ("model", "sku", "sources") and not str(sources.get(n) or "").strip()
        ]
        if undocumented:
            raise ValueError(f"{where}: no source given for {undocumented}")
        return cls(**data)


def load_profile(name: str | Path) -> ServiceProfile:
    """A packaged profile by `model@sku`, or a JSON file by path."""
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return ServiceProfile.from_dict(json.loads(path.read_text()), str(path))
    packaged = resources.files(__package__ or "spotgate.fleetsim").joinpath(PACKAGED)
    entry = packaged.joinpath(f"{name}.json")
    if not entry.is_file():
        known = ", ".join(packaged_profiles())
        raise ValueError(f"no calibration {name!r}; packaged ones: {known}")
    return ServiceProfile.from_dict(json.loads(entry.read_text()), f"{PACKAGED}/{name}.json")


def packaged_profiles() -> list[str]:
    packaged = resources.files(__package__ or "spotgate.fleetsim").joinpath(PACKAGED)
    return sorted(p.name[: -len(".json")] for p in packaged.iterdir() if p.name.endswith(".json"))

"""How a simulated vLLM worker behaves: its model name, speed and capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    """Knobs mirroring the vLLM settings that shape what a gateway observes.

    `max_concurrency` plays vLLM's `--max-num-seqs`: requests beyond it queue
    FIFO and show as waiting, which is what load-aware routing reacts to.
    `tokens_per_s` of 0 or infinity removes decode pacing entirely so tests
    and overhead benchmarks measure the gateway, not the simulator.
    """

    model: str = "sim-model"
    ttft_ms: float = 20.0
    tokens_per_s: float = 200.0
    max_concurrency: int = 16
    max_model_len: int = 2048
    default_max_tokens: int = 64
    seed: int = 0
    embedding_dim: int = 64

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty name")
        if self.ttft_ms < 0 or math.isnan(self.ttft_ms):
            raise ValueError("ttft_ms must be >= 0")
        if self.tokens_per_s < 0 or math.isnan(self.tokens_per_s):
            raise ValueError("tokens_per_s must be >= 0 (0 or inf means no pacing)")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2")
        if self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be >= 1")
        if self.embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")

    @property
    def ttft_s(self) -> float:
        return self.ttft_ms / 1000.0

    @property
    def token_interval_s(self) -> float:
        """Seconds between decoded tokens; 0 when pacing is off."""
        if self.tokens_per_s == 0 or math.isinf(self.tokens_per_s):
            return 0.0
        return 1.0 / self.tokens_per_s

"""A vLLM-compatible inference server simulator: workers without a model.

Serves vLLM's OpenAI routes, metrics and tokenizer endpoints with
deterministic text and configurable latency and batch capacity, so tests,
load runs and many-worker local stacks need no GPU.
"""

from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.server import create_sim_app

__all__ = ["SimConfig", "create_sim_app"]

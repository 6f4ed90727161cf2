"""The model catalogue `spotgate dev` serves when the user configured none.

Without one, `model: "auto"` has nothing to choose from (a 404), and the
README's model `smollm2` is unknown to a sim stack, whose workers serve
`sim-model`. So the dev stack catalogues what it runs: its chat model under
the name its workers serve, `smollm2` as an alias wherever the weights are
SmolLM2 or the sim stands in for them, and the embedding model if there is
one, marked as such so a chat request to it (or embeddings to the chat model)
gets a clear 400 instead of the worker's bare 404. A catalogue the user
configured is used as it is: they said what they want.
"""

from __future__ import annotations

import json
from pathlib import Path

from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.hosts.local import DevOptions
from spotgate.settings import Settings

SMOLLM2 = "smollm2"
# VllmLaunch's max_model_len and SimConfig's, unless --engine-arg says otherwise
DEV_CONTEXT_LENGTH = 2048
EMBEDDING_CONTEXT_LENGTH = 256  # what worker_process starts the pooling model with
_SUFFIXES = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}


def _given_max_model_len(engine_args: list[str]) -> str | None:
    """The last --max-model-len among vLLM's extra flags (argparse keeps the last)."""
    found = None
    for index, token in enumerate(engine_args):
        name, _, value = token.replace("_", "-").partition("=")
        if name == "--max-model-len":
            found = value if value else next(iter(engine_args[index + 1 :]), None)
    return found


def _parse_length(text: str) -> int | None:
    """vLLM's spellings: 4096, 4k (1000s), 4K (1024s); None for auto and -1."""
    multiplier = _SUFFIXES.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _SUFFIXES else text
    return int(digits) * multiplier if digits.isdigit() and int(digits) > 0 else None


def _config_window(model_dir: Path | None) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text()) if model_dir else {}
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def context_length(options: DevOptions) -> int:
    """The window the workers will really have, so the gateway's max_tokens bound and
    `auto` agree with vLLM's own check."""
    given = _given_max_model_len(options.engine_args)
    if given is None:
        return DEV_CONTEXT_LENGTH
    return _parse_length(given) or _config_window(options.model_dir) or DEV_CONTEXT_LENGTH


def dev_catalogue(settings: Settings, options: DevOptions) -> list[ModelEntry]:
    """Entries for what this dev stack runs; none when the user has a catalogue.

    `options.model_dir` is the user's --model-dir (None: the packaged SmolLM2 or the sim).
    """
    if settings.gateway.model_catalogue or settings.gateway.catalogue_file is not None:
        return []
    price_in = settings.tenancy.default_price_in_per_1m
    price_out = settings.tenancy.default_price_out_per_1m
    stands_for_smollm2 = options.model_dir is None and options.model != SMOLLM2
    chat = ModelEntry(
        name=options.model,
        aliases=[SMOLLM2] if stands_for_smollm2 else [],
        context_length=context_length(options),
        pool=options.pool,
        mode="chat" if options.engine == "vllm" else None,  # the sim answers embeddings too
        price_in_per_1m=price_in,
        price_out_per_1m=price_out,
    )
    entries = [chat]
    if options.embeddings:
        from spotgate.engines.embedding_model import SERVED_NAME

        entries.append(
            ModelEntry(
                name=SERVED_NAME,
                context_length=EMBEDDING_CONTEXT_LENGTH,
                pool="embeddings",
                mode="embedding",
                auto=False,
                price_in_per_1m=price_in,
                price_out_per_1m=price_out,
            )
        )
    return entries


def with_dev_catalogue(settings: Settings, options: DevOptions) -> Settings:
    entries = dev_catalogue(settings, options)
    if not entries:
        return settings
    gateway = settings.gateway.model_copy(update={"model_catalogue": entries})
    return settings.model_copy(update={"gateway": gateway})

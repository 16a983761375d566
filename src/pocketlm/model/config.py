"""ModelConfig: the one typed description of a Llama-family decoder.

Everything in pocketlm (cost model, torch model, GGUF export, search, training) reads this
dataclass. It round-trips to a Hugging Face ``config.json`` (LlamaForCausalLM, or
Qwen2ForCausalLM when q/k/v carry a bias) and to YAML/JSON files of our own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pocketlm.errors import UserError
from pocketlm.utils import atomic_write_text

ACTIVATIONS = ("silu", "relu", "gelu")


@dataclass
class ModelConfig:
    vocab_size: int = 49152
    hidden_size: int = 576
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int | None = None  # None: same as num_heads (multi-head attention)
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int = 1536
    activation: str = "silu"
    gated_mlp: bool = True  # down(act(gate(x)) * up(x)); False: down(act(up(x)))
    qkv_bias: bool = False  # Qwen2 style: bias on q, k, v projections only
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    norm_eps: float = 1e-5
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    name: str = "custom"
    source: str = ""  # where a preset's numbers come from

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None and isinstance(self.hidden_size, int) and isinstance(self.num_heads, int):
            if self.num_heads > 0 and self.hidden_size % self.num_heads == 0:
                self.head_dim = self.hidden_size // self.num_heads
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"config field '{name}' must be an integer, got {value!r}")
            if value <= 0:
                raise UserError(f"config field '{name}' must be positive, got {value}")
        if self.head_dim is None:
            raise UserError(
                f"num_heads ({self.num_heads}) does not divide hidden_size ({self.hidden_size}); "
                "set head_dim explicitly or pick a head count that divides it")
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise UserError(f"config field 'head_dim' must be a positive integer, got {self.head_dim!r}")
        if self.head_dim % 2:
            raise UserError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise UserError(
                f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"config field '{name}' must be a positive number, got {value!r}")
        for name in ("gated_mlp", "qkv_bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"config field '{name}' must be true or false, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ derived
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def hf_architecture(self) -> str:
        return "Qwen2ForCausalLM" if self.qkv_bias else "LlamaForCausalLM"

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def shape_key(self) -> str:
        """A short human-readable id of the architecture (no name/source)."""
        return (f"h{self.hidden_size}-l{self.num_layers}-a{self.num_heads}-kv{self.num_kv_heads}"
                f"-d{self.head_dim}-f{self.intermediate_size}-{self.activation}"
                f"{'' if self.gated_mlp else '-plain'}{'-bias' if self.qkv_bias else ''}"
                f"{'-tied' if self.tie_embeddings else ''}-v{self.vocab_size}")

    # ------------------------------------------------------------------ plain dict / YAML / JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise UserError(f"a model config must be a mapping, got {type(data).__name__}")
        if "model_type" in data or "architectures" in data:
            return cls.from_hf_dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        text = (_yaml_dump(self.to_dict()) if path.suffix in (".yaml", ".yml")
                else json.dumps(self.to_dict(), indent=2) + "\n")
        atomic_write_text(path, text)

    # ------------------------------------------------------------------ Hugging Face
    def to_hf_dict(self) -> dict[str, Any]:
        if not self.gated_mlp:
            raise UserError("a plain (non-gated) MLP has no Hugging Face architecture that loads without "
                            "remote code; use gated_mlp: true to save or export this model")
        qwen = self.qkv_bias
        out: dict[str, Any] = {
            "architectures": [self.hf_architecture],
            "model_type": "qwen2" if qwen else "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "hidden_act": self.activation,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": float(self.rope_theta),
            "tie_word_embeddings": self.tie_embeddings,
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": "float32",
        }
        if qwen:
            if self.head_dim != self.hidden_size // self.num_heads or self.hidden_size % self.num_heads:
                raise UserError("Qwen2ForCausalLM requires head_dim == hidden_size / num_heads")
            out.update(use_sliding_window=False, sliding_window=None, max_window_layers=self.num_layers)
        else:
            out.update(head_dim=self.head_dim, attention_bias=False, mlp_bias=False, pretraining_tp=1)
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            out["eos_token_id"] = self.eos_token_id
        out["pocketlm"] = {"name": self.name, "source": self.source}
        return out

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        model_type = data.get("model_type", "")
        if model_type not in ("llama", "qwen2", "mistral", "phonelm", ""):
            raise UserError(f"unsupported Hugging Face model_type '{model_type}' "
                            "(pocketlm reads llama, qwen2 and mistral-style configs)")
        if data.get("attention_bias") or data.get("mlp_bias"):
            raise UserError("Llama configs with attention_bias/mlp_bias (bias on o_proj or MLP) are not supported")
        try:
            hidden, heads = int(data["hidden_size"]), int(data["num_attention_heads"])
            rope = data.get("rope_theta")
            if rope is None:
                rope = (data.get("rope_parameters") or {}).get("rope_theta", 10000.0)
            eos = data.get("eos_token_id")
            if isinstance(eos, list):
                eos = eos[0] if eos else None
            extra = data.get("pocketlm") or {}
            return cls(
                vocab_size=int(data["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(data["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(data.get("num_key_value_heads") or heads),
                head_dim=int(data.get("head_dim") or (hidden // heads if hidden % heads == 0 else 0)) or None,
                intermediate_size=int(data["intermediate_size"]),
                activation=_hf_activation(data.get("hidden_act", "silu")),
                gated_mlp=True,
                qkv_bias=model_type == "qwen2",
                tie_embeddings=bool(data.get("tie_word_embeddings", model_type != "llama")),
                rope_theta=float(rope),
                max_position_embeddings=int(data.get("max_position_embeddings", 2048)),
                norm_eps=float(data.get("rms_norm_eps", 1e-6)),
                bos_token_id=data.get("bos_token_id"),
                eos_token_id=eos,
                name=extra.get("name", data.get("_name_or_path") or "custom") or "custom",
                source=extra.get("source", ""),
            )
        except KeyError as e:
            raise UserError(f"Hugging Face config is missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"Hugging Face config has a malformed field: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ModelConfig":
        """Read a pocketlm YAML/JSON config or a Hugging Face config.json (or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        data = read_structured_file(path)
        if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict) \
                and "hidden_size" not in data:
            data = data["model"]  # a recipe YAML with a `model:` section
        return cls.from_dict(data)


def _hf_activation(act: str) -> str:
    aliases = {"silu": "silu", "swish": "silu", "relu": "relu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu"}
    if act not in aliases:
        raise UserError(f"unsupported hidden_act '{act}'; pocketlm supports {', '.join(ACTIVATIONS)}")
    return aliases[act]


def read_structured_file(path: str | os.PathLike) -> Any:
    """Parse a JSON or YAML file, turning syntax errors into one-line UserErrors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON in {path}: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise UserError(f"malformed YAML in {path}: {first}") from None


def _yaml_dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


__all__ = ["ModelConfig", "ACTIVATIONS", "read_structured_file"]

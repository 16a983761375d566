"""Named configs: the published small models a user would otherwise pick, plus tiny ones for tests.

Numbers come from each model's released config.json (see `source`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig


def _p(name: str, source: str, **kw) -> ModelConfig:
    kw.setdefault("max_position_embeddings", 2048)
    return ModelConfig(name=name, source=source, **kw)


_HF = "https://huggingface.co/{}/blob/main/config.json"

_ALL = [
    # SmolLM2: deep-thin GQA, vocab 49152 (the byte-level BPE PhoneLM also uses)
    _p("smollm2-135m", _HF.format("HuggingFaceTB/SmolLM2-135M"), vocab_size=49152, hidden_size=576,
       num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536, rope_theta=100000.0,
       norm_eps=1e-5, max_position_embeddings=8192),
    _p("smollm2-360m", _HF.format("HuggingFaceTB/SmolLM2-360M"), vocab_size=49152, hidden_size=960,
       num_layers=32, num_heads=15, num_kv_heads=5, intermediate_size=2560, rope_theta=100000.0,
       norm_eps=1e-5, max_position_embeddings=8192),
    _p("smollm2-1.7b", _HF.format("HuggingFaceTB/SmolLM2-1.7B"), vocab_size=49152, hidden_size=2048,
       num_layers=24, num_heads=32, num_kv_heads=32, intermediate_size=8192, rope_theta=130000.0,
       norm_eps=1e-5, max_position_embeddings=8192),
    # MobileLLM (ICML 2024): deep and thin, embedding sharing, GQA
    _p("mobilellm-125m", _HF.format("facebook/MobileLLM-125M"), vocab_size=32000, hidden_size=576,
       num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536, norm_eps=1e-5),
    _p("mobilellm-350m", _HF.format("facebook/MobileLLM-350M"), vocab_size=32000, hidden_size=960,
       num_layers=32, num_heads=15, num_kv_heads=5, intermediate_size=2560, norm_eps=1e-5),
    _p("mobilellm-600m", _HF.format("facebook/MobileLLM-600M"), vocab_size=32000, hidden_size=1152,
       num_layers=40, num_heads=18, num_kv_heads=6, intermediate_size=3072, norm_eps=1e-5),
    _p("mobilellm-1b", _HF.format("facebook/MobileLLM-1B"), vocab_size=32000, hidden_size=1280,
       num_layers=54, num_heads=20, num_kv_heads=5, intermediate_size=3584, norm_eps=1e-5),
    # Qwen2.5: q/k/v bias, large vocabulary, few kv heads
    _p("qwen2.5-0.5b", _HF.format("Qwen/Qwen2.5-0.5B"), vocab_size=151936, hidden_size=896,
       num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864, qkv_bias=True,
       rope_theta=1000000.0, norm_eps=1e-6, max_position_embeddings=32768),
    _p("qwen2.5-1.5b", _HF.format("Qwen/Qwen2.5-1.5B"), vocab_size=151936, hidden_size=1536,
       num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960, qkv_bias=True,
       rope_theta=1000000.0, norm_eps=1e-6, max_position_embeddings=32768),
    _p("tinyllama-1.1b", _HF.format("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"),
       vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
       intermediate_size=5632, tie_embeddings=False, norm_eps=1e-5),
    _p("llama-3.2-1b", _HF.format("meta-llama/Llama-3.2-1B"), vocab_size=128256, hidden_size=2048,
       num_layers=16, num_heads=32, num_kv_heads=8, intermediate_size=8192, rope_theta=500000.0,
       norm_eps=1e-5, max_position_embeddings=131072),
    _p("minicpm-1.2b", _HF.format("openbmb/MiniCPM-1B-sft-bf16"), vocab_size=73440, hidden_size=1536,
       num_layers=52, num_heads=24, num_kv_heads=8, intermediate_size=3840, norm_eps=1e-5,
       max_position_embeddings=4096),
    # PhoneLM: searched for on-device speed; ReLU-gated MLP, MHA, tied, vocab 49152
    _p("phonelm-0.5b", _HF.format("mllmTeam/PhoneLM-0.5B"), vocab_size=49152, hidden_size=1024,
       num_layers=24, num_heads=16, num_kv_heads=16, intermediate_size=4864, activation="relu",
       norm_eps=1e-6),
    _p("phonelm-1.5b", _HF.format("mllmTeam/PhoneLM-1.5B"), vocab_size=49152, hidden_size=2560,
       num_layers=19, num_heads=16, num_kv_heads=16, head_dim=160, intermediate_size=6816,
       activation="relu", norm_eps=1e-6),
    # Tiny configs for tests and CPU recipes
    _p("tiny", "pocketlm test config", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
       num_kv_heads=2, intermediate_size=176, max_position_embeddings=512),
    _p("tiny-relu", "pocketlm test config", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
       num_kv_heads=4, intermediate_size=160, activation="relu", max_position_embeddings=512),
    _p("tiny-qwen", "pocketlm test config", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
       num_kv_heads=2, intermediate_size=176, qkv_bias=True, max_position_embeddings=512),
    _p("tiny-untied", "pocketlm test config", vocab_size=512, hidden_size=64, num_layers=2, num_heads=4,
       num_kv_heads=1, intermediate_size=176, tie_embeddings=False, max_position_embeddings=512),
    # The CPU pre-training recipe's model: ~9M parameters, trains in minutes on 2 cores
    _p("pocket-9m", "pocketlm CPU recipe", vocab_size=4096, hidden_size=320, num_layers=6, num_heads=5,
       num_kv_heads=5, intermediate_size=864, max_position_embeddings=1024),
]

PRESETS: dict[str, ModelConfig] = {c.name: c for c in _ALL}
TEST_PRESETS = ("tiny", "tiny-relu", "tiny-qwen", "tiny-untied")


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name].replace()
    except KeyError:
        raise UserError(f"unknown preset '{name}'; available: {', '.join(PRESETS)}") from None


def published_presets() -> list[ModelConfig]:
    """Presets of released models (what a user would otherwise pick), excluding test/recipe configs."""
    return [c.replace() for c in _ALL if c.source.startswith("http")]


def resolve_config(spec: str) -> ModelConfig:
    """A preset name, a config file (pocketlm YAML/JSON or HF config.json) or a checkpoint directory."""
    if spec in PRESETS:
        return get_preset(spec)
    path = Path(spec)
    if path.exists():
        return ModelConfig.from_file(path)
    if path.suffix in (".json", ".yaml", ".yml") or os.sep in spec:
        raise UserError(f"file or directory not found: {spec}")
    raise UserError(f"unknown preset '{spec}' (and no such file); run `pocketlm presets` to list presets")

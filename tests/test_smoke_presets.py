"""One smoke run over every architecture (mlx-lm style): each preset's architectural features
(activation, GQA ratio, head_dim override, q/k/v bias, tying, rope theta) on a shrunken shape,
through the torch model, a standard checkpoint, GGUF export and llama.cpp where it can run."""

import pytest
import torch

from pocketlm.model.config import ModelConfig
from pocketlm.runtime.gguf import export_gguf, llamacpp_problems
from pocketlm.model.presets import PRESETS
from pocketlm.runtime.engine import load_runtime


def shrink(cfg: ModelConfig) -> ModelConfig:
    """Same features, tiny sizes: 4 heads (kv heads keep the preset's grouping where possible)."""
    heads = 4
    group = cfg.num_heads // cfg.num_kv_heads
    kv = max(1, heads // group) if heads % max(1, heads // group) == 0 else heads
    head_dim = 32 if cfg.head_dim != cfg.hidden_size // cfg.num_heads else 16
    return cfg.replace(vocab_size=320, hidden_size=64, num_layers=2, num_heads=heads, num_kv_heads=kv,
                       head_dim=head_dim, intermediate_size=128, max_position_embeddings=128,
                       name=f"{cfg.name}-smoke")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_end_to_end(name, tmp_path):
    cfg = shrink(PRESETS[name])
    prompt = [1, 2, 3, 4, 5]
    torch_rt = load_runtime(cfg, backend="torch", threads=1)
    res = torch_rt.generate(prompt, max_new_tokens=8)
    assert len(res.tokens) == 8 and res.prompt_tok_s > 0 and res.gen_tok_s > 0 and res.peak_mem_mb > 0
    torch_rt.close()
    if llamacpp_problems(cfg):  # e.g. PhoneLM's ReLU-gated MLP: refused with a message, nothing written
        with pytest.raises(Exception, match="activation"):
            export_gguf(cfg, tmp_path / "m.gguf", quant="q4_0")
        assert not (tmp_path / "m.gguf").exists()
        cfg = cfg.replace(activation="silu")
    path = export_gguf(cfg, tmp_path / "m.gguf", quant="q8_0")
    rt = load_runtime(str(path), backend="llamacpp", threads=1)
    out = rt.generate(prompt, max_new_tokens=8)
    rt.close()
    assert len(out.tokens) == 8 and all(0 <= t < cfg.vocab_size for t in out.tokens)

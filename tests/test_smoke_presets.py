"""One smoke run over every architecture (mlx-lm style): each preset's architectural features
(activation, GQA ratio, head_dim override, q/k/v bias, tying, rope theta) on a shrunken shape,
through the torch engine, a standard checkpoint (saved, reloaded, read by transformers), its GGUF
export and llama.cpp, which must pick the same greedy tokens as torch where it can run the preset."""

import importlib.util

import pytest
import torch

from pocketlm.model.checkpoint import load_checkpoint, save_checkpoint
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import PocketLM
from pocketlm.model.presets import PRESETS
from pocketlm.runtime.engine import load_runtime
from pocketlm.runtime.gguf import export_gguf, llamacpp_problems

PROMPT = [1, 2, 3, 4, 5]
STEPS = 8


def requires(*packages: str):
    """Skip a test (only that test) when an optional package it runs is not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


def shrink(cfg: ModelConfig) -> ModelConfig:
    """Same features, tiny sizes: 4 heads (kv heads keep the preset's grouping where possible)."""
    heads = 4
    group = cfg.num_heads // cfg.num_kv_heads
    kv = max(1, heads // group) if heads % max(1, heads // group) == 0 else heads
    head_dim = 32 if cfg.head_dim != cfg.hidden_size // cfg.num_heads else 16
    return cfg.replace(vocab_size=320, hidden_size=64, num_layers=2, num_heads=heads, num_kv_heads=kv,
                       head_dim=head_dim, intermediate_size=128, max_position_embeddings=128,
                       name=f"{cfg.name}-smoke")


def checkpoint(cfg: ModelConfig, out) -> PocketLM:
    """Save a random model with non-trivial norms and biases (a wrong mapping cannot hide) to `out`."""
    model = PocketLM.from_config(cfg, seed=0)
    model.init_weights(0, std=0.3)  # wide enough that greedy decoding wanders
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    save_checkpoint(model, out)
    return model


def greedy(spec, backend: str) -> list[int]:
    with load_runtime(spec, backend=backend, threads=1) as rt:
        res = rt.generate(PROMPT, max_new_tokens=STEPS)
    assert res.prompt_tok_s > 0 and res.gen_tok_s > 0 and res.peak_mem_mb > 0
    return res.tokens


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_survives_a_checkpoint_round_trip(name, tmp_path):
    cfg = shrink(PRESETS[name])
    model = checkpoint(cfg, tmp_path / "ckpt")
    reloaded = load_checkpoint(tmp_path / "ckpt")
    assert reloaded.config.to_dict() == cfg.to_dict()
    want = model.state_dict()
    assert all(torch.equal(t, want[k]) for k, t in reloaded.state_dict().items())
    tokens = greedy(tmp_path / "ckpt", "torch")
    assert len(tokens) == STEPS and all(0 <= t < cfg.vocab_size for t in tokens)
    assert tokens == greedy(model, "torch")  # the engine on the checkpoint dir = on the model in memory


@requires("transformers")
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_checkpoint_loads_in_transformers(name, tmp_path):
    import transformers

    cfg = shrink(PRESETS[name])
    model = checkpoint(cfg, tmp_path / "ckpt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=False)
    ids = torch.tensor([PROMPT * 4])
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-4


@requires("llama_cpp", "gguf")
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_checkpoint_runs_on_llamacpp_like_torch(name, tmp_path):
    cfg = shrink(PRESETS[name])
    if llamacpp_problems(cfg):  # e.g. PhoneLM's ReLU-gated MLP: refused with a message, nothing written
        checkpoint(cfg, tmp_path / "relu")
        with pytest.raises(Exception, match="activation"):
            export_gguf(tmp_path / "relu", tmp_path / "m.gguf", quant="f32")
        assert not (tmp_path / "m.gguf").exists()
        cfg = cfg.replace(activation="silu")
    checkpoint(cfg, tmp_path / "ckpt")
    path = export_gguf(tmp_path / "ckpt", tmp_path / "m.gguf", quant="f32")
    ours, theirs = greedy(tmp_path / "ckpt", "torch"), greedy(str(path), "llamacpp")
    assert len(set(ours)) > 1  # a sequence that says something about the weights
    assert theirs == ours

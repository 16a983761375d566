"""Model numerics: parity with Hugging Face transformers, KV cache consistency, checkpoints."""

import json

import pytest
import torch

from pocketlm.model.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import KVCache, PocketLM
from pocketlm.model.presets import PRESETS, get_preset

try:
    import transformers
except ImportError:  # optional: only the parity tests need it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="needs transformers")

PARITY = {
    "silu-gqa-tied": get_preset("tiny"),
    "relu-mha-tied": get_preset("tiny-relu"),
    "silu-gqa-qkv-bias": get_preset("tiny-qwen"),
    "silu-mqa-untied": get_preset("tiny-untied"),
    "relu-gqa-untied-bias": get_preset("tiny-qwen").replace(activation="relu", tie_embeddings=False),
    "gelu-head-dim-override": ModelConfig(vocab_size=300, hidden_size=48, num_layers=3, num_heads=4,
                                          num_kv_heads=2, head_dim=16, intermediate_size=96,
                                          activation="gelu", rope_theta=5e5),
}


@needs_transformers
@pytest.mark.parametrize("name", list(PARITY))
def test_transformers_loads_our_checkpoint_with_same_logits(name, tmp_path):
    cfg = PARITY[name]
    model = PocketLM.from_config(cfg, seed=3)
    # make norms and biases non-trivial so a wrong mapping cannot hide
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(model, tmp_path / "ckpt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=False)
    assert type(hf).__name__ == cfg.hf_architecture
    ids = torch.randint(0, cfg.vocab_size, (2, 33))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


@needs_transformers
@pytest.mark.parametrize("name", ["silu-gqa-tied", "silu-gqa-qkv-bias", "silu-mqa-untied"])
def test_we_load_a_transformers_checkpoint(name, tmp_path):
    cfg = PARITY[name]
    hf_cfg = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.to_hf_dict().items()
                                                  if k not in ("architectures", "pocketlm")})
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_checkpoint(tmp_path / "hf")
    ids = torch.randint(0, cfg.vocab_size, (1, 20))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() <= 1e-4


@needs_transformers
@pytest.mark.parametrize("name", [n for n in PRESETS if not n.startswith("tiny")])
def test_preset_param_count_equals_transformers_meta_model(name):
    cfg = get_preset(name)
    hf_cfg = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.to_hf_dict().items()
                                                  if k not in ("architectures", "pocketlm")})
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    from pocketlm.model.costs import param_groups

    assert param_groups(cfg)["total"] == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen"])
def test_kv_cache_decode_matches_full_forward(name):
    cfg = get_preset(name)
    model = PocketLM.from_config(cfg, seed=1)
    ids = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(cfg, 2, 64, torch.float32)
        chunks = [model(ids[:, :16], cache=cache), model(ids[:, 16:30], cache=cache)]  # chunked prefill
        chunks += [model(ids[:, t:t + 1], cache=cache) for t in range(30, 40)]
    assert cache.pos == 40
    assert (torch.cat(chunks, dim=1) - full).abs().max().item() < 1e-4


def test_context_longer_than_max_is_user_error():
    cfg = get_preset("tiny")
    model = PocketLM.from_config(cfg)
    with pytest.raises(UserError, match="maximum context"):
        model(torch.zeros(1, cfg.max_position_embeddings + 1, dtype=torch.long))


def test_meta_init_is_fast_and_deterministic():
    import time

    cfg = get_preset("qwen2.5-0.5b")
    t0 = time.perf_counter()
    a = PocketLM.from_config(cfg, seed=7, dtype=torch.bfloat16)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60  # generous: shared 2-core CI; seconds in practice
    assert a.lm_head.weight.data_ptr() == a.model.embed_tokens.weight.data_ptr()
    b = PocketLM.from_config(get_preset("tiny"), seed=7)
    c = PocketLM.from_config(get_preset("tiny"), seed=7)
    assert all(torch.equal(x, y) for x, y in zip(b.state_dict().values(), c.state_dict().values()))
    assert a.model.layers[0].self_attn.o_proj.weight.float().std() < a.model.layers[0].self_attn.q_proj.weight.float().std()


def test_checkpoint_round_trip_and_atomic_overwrite(tmp_path):
    model = PocketLM.from_config(get_preset("tiny-untied"), seed=2)
    out = save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["architectures"] == ["LlamaForCausalLM"] and "lm_head.weight" in read_state_dict(out)
    again = load_checkpoint(out)
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values()))
    save_checkpoint(PocketLM.from_config(get_preset("tiny-untied"), seed=3), out)  # overwrite in place
    assert not torch.equal(load_checkpoint(out).lm_head.weight, model.lm_head.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs left behind


def test_truncated_safetensors_is_user_error(tmp_path):
    out = save_checkpoint(PocketLM.from_config(get_preset("tiny")), tmp_path / "ckpt")
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupted or truncated"):
        load_checkpoint(out)

"""The analytic cost model must be exact: checked against real modules and torch's FLOP counter."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pocketlm.model import costs
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import KVCache, PocketLM
from pocketlm.model.presets import PRESETS, get_preset

CONFIGS = ["tiny", "tiny-relu", "tiny-qwen", "tiny-untied"]


def _groups_from_modules(model: PocketLM) -> dict[str, int]:
    out = dict(embedding=0, attention=0, mlp=0, norms=0, head=0)
    for name, p in model.named_parameters():  # tied head is not listed twice
        if "embed_tokens" in name:
            out["embedding"] += p.numel()
        elif "self_attn" in name:
            out["attention"] += p.numel()
        elif ".mlp." in name:
            out["mlp"] += p.numel()
        elif "norm" in name:
            out["norms"] += p.numel()
        elif name.startswith("lm_head"):
            out["head"] += p.numel()
        else:
            raise AssertionError(f"unclassified parameter {name}")
    return out


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_groups_match_meta_modules(name):
    cfg = get_preset(name)
    with torch.device("meta"):
        model = PocketLM(cfg)
    g = costs.param_groups(cfg)
    assert {k: g[k] for k in _groups_from_modules(model)} == _groups_from_modules(model)
    assert g["total"] == sum(p.numel() for p in model.parameters())
    assert g["non_embedding"] == g["total"] - g["embedding"] - g["head"]


def test_phonelm_0_5b_matches_published_count():
    assert costs.param_groups(get_preset("phonelm-0.5b"))["total"] == 509_658_112


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_flops_match_flop_counter(name):
    cfg = get_preset(name)
    model = PocketLM.from_config(cfg)
    T = 24
    ids = torch.randint(0, cfg.vocab_size, (1, T))
    # the math SDPA backend decomposes into counted bmm ops (the fused CPU kernel is not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids)
    # the SDPA counter charges the full T x T score matrix (no causal saving)
    assert fc.get_total_flops() == costs.flops_prefill(cfg, T, all_logits=True, causal=False)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids, last_only=True)
    assert fc.get_total_flops() == costs.flops_prefill(cfg, T, all_logits=False, causal=False)


@pytest.mark.parametrize("name", CONFIGS)
def test_decode_flops_match_flop_counter(name):
    cfg = get_preset(name)
    model = PocketLM.from_config(cfg)
    T = 17
    cache = KVCache(cfg, 1, 64, torch.float32)
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (1, T)), cache=cache)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            model(torch.randint(0, cfg.vocab_size, (1, 1)), cache=cache)
    assert fc.get_total_flops() == costs.flops_decode(cfg, T)


def test_causal_attention_flops_are_about_half_for_long_prompts():
    cfg = get_preset("tiny")
    full = costs.attention_flops(cfg, 1000, causal=False)
    causal = costs.attention_flops(cfg, 1000, causal=True)
    assert causal == pytest.approx(full / 2, rel=0.01)


@pytest.mark.parametrize("name", CONFIGS)
def test_weight_bytes_fp32_and_bf16_match_state_dict(name):
    cfg = get_preset(name)
    model = PocketLM.from_config(cfg)
    sd = model.hf_state_dict()
    assert costs.weight_bytes(cfg, "fp32") == sum(t.nbytes for t in sd.values())
    assert costs.weight_bytes(cfg, "bf16") == sum(t.to(torch.bfloat16).nbytes for t in sd.values())


def test_quantized_weight_bytes_use_gguf_blocks():
    cfg = ModelConfig(vocab_size=256, hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
    g = costs.param_groups(cfg)
    matrices = g["total"] - g["norms"]
    assert costs.weight_bytes(cfg, "q8_0") == matrices // 32 * 34 + g["norms"] * 4
    assert costs.weight_bytes(cfg, "q4_0") == matrices // 32 * 18 + g["norms"] * 4


def test_kv_cache_bytes_match_real_cache():
    cfg = get_preset("tiny-untied")
    cache = KVCache(cfg, 1, 100, torch.float16)
    assert cache.nbytes() == 100 * costs.kv_bytes_per_token(cfg, kv_bytes=2)


def test_decode_bytes_tied_vs_untied():
    tied = get_preset("tiny")
    untied = tied.replace(tie_embeddings=False)
    # untied reads the head fully but only one embedding row
    extra = costs.decode_bytes(untied, 0, "bf16") - costs.decode_bytes(tied, 0, "bf16")
    assert extra == tied.hidden_size * 2
    assert costs.decode_bytes(tied, 10, "bf16") - costs.decode_bytes(tied, 0, "bf16") == \
        10 * costs.kv_bytes_per_token(tied)


def test_unknown_precision_is_user_error():
    from pocketlm.errors import UserError

    with pytest.raises(UserError, match="unknown precision"):
        costs.weight_bytes(get_preset("tiny"), "int3")

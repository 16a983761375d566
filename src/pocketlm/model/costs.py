"""Analytic cost model of a ModelConfig: parameters, FLOPs, weight/KV bytes, bytes read per token.

Exact for pocketlm's model (tests check it against real modules and against torch's FLOP counter):
- parameter groups (embedding, attention, mlp, norms, head) sum to the model's parameter count;
  ``non_embedding`` excludes the token embedding and an untied output head (Kaplan et al.).
- FLOPs count matrix multiplies only (a multiply-add is 2 FLOPs); norms, activations, RoPE and
  softmax are O(hidden) per token and ignored, as in nanochat/PaLM accounting.
- Weight bytes follow the GGUF layout pocketlm exports: 2-D matrices in the chosen type,
  1-D tensors (norms, biases) in F32. Q8_0 packs 32 weights in 34 bytes, Q4_0 in 18.
"""

from __future__ import annotations

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig

# bytes per weight of a 2-D matrix, by precision name (GGUF block sizes for quantized types)
BYTES_PER_WEIGHT = {
    "fp32": 4.0, "f32": 4.0,
    "bf16": 2.0, "f16": 2.0, "fp16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
}
PRECISIONS = ("fp32", "bf16", "f16", "q8_0", "q4_0")


PRECISION_NAMES = {"f32": "fp32", "fp32": "fp32", "float32": "fp32", "f16": "f16", "fp16": "f16",
               "float16": "f16", "bf16": "bf16", "bfloat16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def cost_precision(quant: str) -> str:
    """Map a quant/dtype name (f32, f16, q8_0, q4_0, bf16, ...) to the name pocketlm.model.costs uses."""
    try:
        return PRECISION_NAMES[str(quant).lower()]
    except KeyError:
        raise UserError(f"unknown precision '{quant}'; choose one of f32, f16, bf16, q8_0, q4_0") from None


def _bytes_per_weight(precision: str) -> float:
    try:
        return BYTES_PER_WEIGHT[precision]
    except KeyError:
        raise UserError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}") from None


def param_groups(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts by group; embedding + attention + mlp + norms + head == total."""
    h, L = cfg.hidden_size, cfg.num_layers
    attn_matrices = h * cfg.q_dim + 2 * h * cfg.kv_dim + cfg.q_dim * h
    attn_bias = (cfg.q_dim + 2 * cfg.kv_dim) if cfg.qkv_bias else 0
    mlp = (3 if cfg.gated_mlp else 2) * h * cfg.intermediate_size
    groups = {
        "embedding": cfg.vocab_size * h,
        "attention": L * (attn_matrices + attn_bias),
        "mlp": L * mlp,
        "norms": (2 * L + 1) * h,
        "head": 0 if cfg.tie_embeddings else cfg.vocab_size * h,
    }
    groups["total"] = sum(groups.values())
    groups["non_embedding"] = groups["total"] - groups["embedding"] - groups["head"]
    return groups


def matmul_params_per_token(cfg: ModelConfig, with_head: bool = True) -> int:
    """Weights that take part in a matmul for every token (the embedding lookup is not a matmul)."""
    g = param_groups(cfg)
    bias = cfg.num_layers * (cfg.q_dim + 2 * cfg.kv_dim) if cfg.qkv_bias else 0
    head = cfg.vocab_size * cfg.hidden_size if with_head else 0
    return g["attention"] - bias + g["mlp"] + head


def attention_flops(cfg: ModelConfig, queries: int, start: int = 0, causal: bool = True) -> int:
    """Score (QK^T) and mix (AV) FLOPs for `queries` new tokens after `start` cached ones."""
    if causal:  # query i (0-based) attends to start + i + 1 keys
        keys = queries * start + queries * (queries + 1) // 2
    else:  # every query attends to all start + queries keys (what a dense-mask kernel computes)
        keys = queries * (start + queries)
    return 4 * cfg.num_layers * cfg.q_dim * keys


def flops_prefill(cfg: ModelConfig, T: int, all_logits: bool = False, causal: bool = True) -> int:
    """Forward FLOPs for a prompt of T tokens. Inference engines compute logits for the last token only;
    training (all_logits=True) computes them for every position."""
    per_token = 2 * matmul_params_per_token(cfg, with_head=False) * T
    head = 2 * cfg.vocab_size * cfg.hidden_size * (T if all_logits else 1)
    return per_token + head + attention_flops(cfg, T, 0, causal)


def flops_decode(cfg: ModelConfig, T: int) -> int:
    """Forward FLOPs for one new token at position T (T tokens already in the KV cache)."""
    return 2 * matmul_params_per_token(cfg) + attention_flops(cfg, 1, T)


def flops_train_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward + backward (3x forward) FLOPs per token for a training sequence of seq_len tokens."""
    return 3 * flops_prefill(cfg, seq_len, all_logits=True) / seq_len


def weight_bytes(cfg: ModelConfig, precision: str = "bf16") -> int:
    """Bytes of all weights as stored (matrices at `precision`, 1-D tensors F32 when quantized)."""
    bpw = _bytes_per_weight(precision)
    g = param_groups(cfg)
    vectors = g["norms"] + (cfg.num_layers * (cfg.q_dim + 2 * cfg.kv_dim) if cfg.qkv_bias else 0)
    matrices = g["total"] - vectors
    vector_bpw = 4.0 if precision in ("q8_0", "q4_0") else bpw
    return int(round(matrices * bpw + vectors * vector_bpw))


def kv_bytes_per_token(cfg: ModelConfig, kv_bytes: float = 2) -> int:
    """KV-cache bytes one token adds (keys and values, all layers); llama.cpp's default cache is F16."""
    return int(2 * cfg.num_layers * cfg.kv_dim * kv_bytes)


def decode_bytes(cfg: ModelConfig, T: int, precision: str = "bf16", kv_bytes: float = 2) -> int:
    """Bytes read to decode one token at position T: every weight once (only one row of a token
    embedding that is not also the head), plus the KV cache of T previous tokens (+ the new one)."""
    bpw = _bytes_per_weight(precision)
    row = cfg.hidden_size * bpw
    embedding = cfg.vocab_size * cfg.hidden_size * bpw
    skipped = 0 if cfg.tie_embeddings else embedding - row  # untied: the lookup reads one row only
    return int(round(weight_bytes(cfg, precision) - skipped + kv_bytes_per_token(cfg, kv_bytes) * (T + 1)))


def summary(cfg: ModelConfig, context: int = 2048) -> dict:
    """The whole cost breakdown as plain data (what `pocketlm info --json` prints)."""
    g = param_groups(cfg)
    return {
        "name": cfg.name,
        "config": cfg.to_dict(),
        "params_total": g["total"],
        "params_non_embedding": g["non_embedding"],
        "param_groups": {k: g[k] for k in ("embedding", "attention", "mlp", "norms", "head")},
        "embedding_share": (g["embedding"] + g["head"]) / g["total"],
        "weight_bytes": {p: weight_bytes(cfg, p) for p in PRECISIONS},
        "kv_bytes_per_token_f16": kv_bytes_per_token(cfg),
        "kv_cache_bytes_at_context": {"context": context, "bytes": kv_bytes_per_token(cfg) * context},
        "flops_per_token_forward": 2 * matmul_params_per_token(cfg),
        "flops_prefill": {str(t): flops_prefill(cfg, t) for t in (128, 512, context)},
        "flops_decode": {str(t): flops_decode(cfg, t) for t in (0, 512, context)},
        "decode_bytes_per_token": {p: decode_bytes(cfg, 0, p) for p in PRECISIONS},
        "decode_bytes_at_context": {p: decode_bytes(cfg, context, p) for p in PRECISIONS},
    }

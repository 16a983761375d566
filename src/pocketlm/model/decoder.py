"""The pocketlm decoder: a compact Llama-family transformer with Hugging Face parameter names.

RMSNorm pre-norm blocks, rotary embeddings (HF "rotate half" layout), grouped-query attention
through ``scaled_dot_product_attention``, a gated or plain MLP and an optionally tied head.
State-dict keys match ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` so checkpoints load in
transformers without remote code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig

_ACT = {"silu": F.silu, "relu": F.relu, "gelu": F.gelu}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 like HF, so bf16 runs match its numerics.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Rotary(nn.Module):
    """cos/sin tables for positions [0, max_positions), grown on demand."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    def tables(self, end: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < end or self._cos.device != device:
            size = max(end, 256 if self._cos is None else 2 * self._cos.shape[0])
            inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64,
                                                           device=device).float() / self.head_dim))
            freqs = torch.outer(torch.arange(size, device=device, dtype=torch.float32), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin = emb.cos(), emb.sin()
        return self._cos[:end].to(dtype), self._sin[:end].to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class KVCache:
    """Pre-allocated keys/values for all layers: [layers, batch, kv_heads, max_len, head_dim]."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.pos = 0  # number of positions already filled

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.q_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.q_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None, mask) -> torch.Tensor:
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            start = cache.pos
            cache.k[layer, :b, :, start:start + t] = k
            cache.v[layer, :b, :, start:start + t] = v
            k = cache.k[layer, :b, :, :start + t]
            v = cache.v[layer, :b, :, :start + t]
        gqa = cfg.num_kv_heads != cfg.num_heads
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, cfg.q_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.act = _ACT[cfg.activation]
        self.gated = cfg.gated_mlp
        if self.gated:
            self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, layer, cache, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """Named `model` inside PocketLM so parameter names read `model.layers.0...` as in HF."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)


class PocketLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False, select: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, T, vocab] (or [batch, 1, vocab] with last_only) for input_ids [batch, T].

        With a cache, the tokens continue from cache.pos and the cache is advanced. `select`, a boolean
        [batch, T] mask, returns logits [N, vocab] at those positions only: in SFT few positions carry a
        loss, and the LM head is a fifth of a small model's compute.
        """
        b, t = input_ids.shape
        start = cache.pos if cache is not None else 0
        if start + t > self.config.max_position_embeddings:
            raise UserError(f"sequence of {start + t} tokens exceeds the model's maximum context "
                            f"of {self.config.max_position_embeddings}")
        if cache is not None and start + t > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, need {start + t}")
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rotary.tables(start + t, x.device, x.dtype)
        cos, sin = cos[start:start + t], sin[start:start + t]
        mask = None
        if start > 0 and t > 1:  # chunked prefill: query i sees keys up to start + i
            mask = (torch.arange(start + t, device=x.device)[None, :]
                    <= (start + torch.arange(t, device=x.device))[:, None])
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, i, cache, mask)
        if cache is not None:
            cache.pos = start + t
        x = self.model.norm(x)
        if last_only:
            x = x[:, -1:]
        elif select is not None:
            x = x[select]
        return self.lm_head(x)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: ModelConfig, seed: int | None = 0, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu", init: bool = True) -> "PocketLM":
        """Build on the meta device, then materialise: no slow default init of every Linear."""
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device=device)
        if cfg.tie_embeddings:  # to_empty breaks the tie; restore it
            model.lm_head.weight = model.model.embed_tokens.weight
        if init:
            model.init_weights(seed)
        return model.to(dtype)

    @torch.no_grad()
    def init_weights(self, seed: int | None = 0, std: float = 0.02) -> None:
        """GPT-2 style: N(0, std), residual output projections scaled by 1/sqrt(2 * layers)."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(0 if seed is None else seed)
        out_std = std / math.sqrt(2 * self.config.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(s))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() de-duplicates tied weights

    # ------------------------------------------------------------------ state dict (HF names)
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        sd = {k: v for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor], strict: bool = True) -> None:
        sd = dict(sd)
        if self.config.tie_embeddings:
            sd.pop("lm_head.weight", None)
            sd["lm_head.weight"] = sd.get("model.embed_tokens.weight")
        # HF may carry buffers we don't have (rotary inv_freq in old checkpoints)
        sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if strict and (missing or unexpected):
            raise UserError(f"checkpoint does not match the config: missing {missing[:4]}, "
                            f"unexpected {unexpected[:4]}")
        if self.config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

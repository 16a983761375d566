"""GGUF export for llama.cpp: `pocketlm export MODEL --format gguf --quant q4_0 --out model.gguf`.

Follows llama.cpp's convert_hf_to_gguf.py conventions: arch "llama" (or "qwen2" when q/k/v carry a
bias), HF tensor names mapped to llama.cpp's, q/k rows permuted from HF's rotate-half layout to the
interleaved pairs llama.cpp's "llama" rope expects (qwen2 uses NeoX rope, no permute), a tied head
written once as token_embd, 1-D norms and biases in F32, and a tensor whose rows are not a multiple
of the 32-element quant block falling back to F16 (as llama.cpp's converter does).

`--quant bf16` writes 16-bit brain floats (rounded to nearest even, as torch does): the same bytes as F16,
but on CPUs with AVX512-BF16 llama.cpp's BF16 dot product is a native instruction, while its F16 one
converts every weight to F32 first and is compute-bound on 2 threads (benchmarks/runtime_roofline.py).

Random-weight exports (a preset, a config) never build a full-precision model: every tensor is
generated directly in its target layout (random Q4_0/Q8_0 blocks with a fixed fp16 scale), and
tensors are streamed to disk one at a time, so a ≈0.5B Q4_0 candidate takes seconds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import has_tokenizer, is_checkpoint_dir, read_state_dict
from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import resolve_config
from pocketlm.utils import atomic_path

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")
QK = 32  # llama.cpp's block size for Q4_0 / Q8_0
# llama.cpp's LLAMA_FTYPE_* values (general.file_type)
_FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
PLACEHOLDER_KEY = "pocketlm.placeholder_vocab"
CONFIG_KEY = "pocketlm.config"
# Small JSON files a checkpoint carries for its applications (e.g. intent.json: how an intent model was
# prompted) travel inside the GGUF as "pocketlm.file.NAME", so the .gguf alone is enough to run it.
FILE_KEY_PREFIX = "pocketlm.file."
_STANDARD_JSON = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "adapter_config.json", "model.safetensors.index.json"}
_MAX_CARRIED_BYTES = 1 << 20


def llamacpp_problems(cfg: ModelConfig) -> list[str]:
    """Why llama.cpp's llama/qwen2 architectures can't run `cfg` as-is ([] when they can)."""
    problems = []
    if cfg.activation != "silu":
        problems.append(f"activation {cfg.activation}: llama.cpp's llama architecture only has a "
                        "SiLU-gated MLP (time the same shape with activation silu instead)")
    if not cfg.gated_mlp:
        problems.append("non-gated MLP: llama.cpp's llama architecture requires gate/up/down "
                        "projections (gated_mlp: true)")
    return problems


def gguf_arch(cfg: ModelConfig) -> str:
    return "qwen2" if cfg.qkv_bias else "llama"


# ---------------------------------------------------------------------------------------------
# tensor plan: (gguf name, HF name, numpy shape [out, in] or [n], init std or None for norms)

@dataclass
class _Tensor:
    name: str
    hf_name: str
    shape: tuple[int, ...]
    std: float | None  # None: a norm weight (ones); 0.0: a bias (zeros)
    permute_heads: int = 0  # >0: llama q/k permutation with this many heads


def _plan(cfg: ModelConfig) -> list[_Tensor]:
    import math

    h, std = cfg.hidden_size, 0.02
    out_std = std / math.sqrt(2 * cfg.num_layers)  # same init scheme as PocketLM.init_weights
    llama = gguf_arch(cfg) == "llama"
    plan = [_Tensor("token_embd.weight", "model.embed_tokens.weight", (cfg.vocab_size, h), std)]
    for i in range(cfg.num_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        plan += [
            _Tensor(b + "attn_norm.weight", p + "input_layernorm.weight", (h,), None),
            _Tensor(b + "attn_q.weight", p + "self_attn.q_proj.weight", (cfg.q_dim, h), std,
                    cfg.num_heads if llama else 0),
            _Tensor(b + "attn_k.weight", p + "self_attn.k_proj.weight", (cfg.kv_dim, h), std,
                    cfg.num_kv_heads if llama else 0),
            _Tensor(b + "attn_v.weight", p + "self_attn.v_proj.weight", (cfg.kv_dim, h), std),
        ]
        if cfg.qkv_bias:
            plan += [_Tensor(b + "attn_q.bias", p + "self_attn.q_proj.bias", (cfg.q_dim,), 0.0),
                     _Tensor(b + "attn_k.bias", p + "self_attn.k_proj.bias", (cfg.kv_dim,), 0.0),
                     _Tensor(b + "attn_v.bias", p + "self_attn.v_proj.bias", (cfg.kv_dim,), 0.0)]
        plan += [
            _Tensor(b + "attn_output.weight", p + "self_attn.o_proj.weight", (h, cfg.q_dim), out_std),
            _Tensor(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", (h,), None),
            _Tensor(b + "ffn_gate.weight", p + "mlp.gate_proj.weight", (cfg.intermediate_size, h), std),
            _Tensor(b + "ffn_up.weight", p + "mlp.up_proj.weight", (cfg.intermediate_size, h), std),
            _Tensor(b + "ffn_down.weight", p + "mlp.down_proj.weight", (h, cfg.intermediate_size), out_std),
        ]
    plan.append(_Tensor("output_norm.weight", "model.norm.weight", (h,), None))
    if not cfg.tie_embeddings:
        plan.append(_Tensor("output.weight", "lm_head.weight", (cfg.vocab_size, h), std))
    return plan


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows → llama.cpp interleaved pairs (LlamaModel.permute in convert_hf_to_gguf)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tensor_type(t: _Tensor, quant: str) -> str:
    """The GGUF type of one tensor: 1-D in F32; rows not divisible by the block size in F16."""
    if len(t.shape) == 1 or quant == "f32":
        return "f32"
    if quant in ("q8_0", "q4_0") and t.shape[-1] % QK:
        return "f16"
    return quant


# ---------------------------------------------------------------------------------------------
# encoding: real weights (quantized with gguf-py) or random weights (written directly)

def _encode(w: np.ndarray, ttype: str) -> np.ndarray:
    import gguf

    if ttype == "f32":
        return np.ascontiguousarray(w, dtype=np.float32)
    if ttype == "f16":
        return np.ascontiguousarray(w, dtype=np.float16)
    if ttype == "bf16":
        return _bf16_bits(np.asarray(w, dtype=np.float32))
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[ttype]
    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)


def _bf16_bits(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even (as torch and gguf-py do)."""
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _nibble_lut() -> np.ndarray:
    # Q4_0 stores w = d * (nibble - 8): uniform nibbles would have mean -0.5 (a rank-1 bias in every
    # matrix). Mapping nibble 0 (-8) to 8 (0) gives symmetric values -7..7 with zero mean.
    b = np.arange(256, dtype=np.uint16)
    lo, hi = b & 15, b >> 4
    lo = np.where(lo == 0, 8, lo)
    hi = np.where(hi == 0, 8, hi)
    return (lo | (hi << 4)).astype(np.uint8)


_Q4_LUT = _nibble_lut()
_Q8_LUT = np.where(np.arange(256) == 128, 0, np.arange(256)).astype(np.uint8)  # -128 → 0, zero mean
_Q4_STD = float(np.sqrt(2 * sum(k * k for k in range(1, 8)) / 16))  # std of the symmetric nibble values
_Q8_STD = float(np.sqrt(2 * sum(k * k for k in range(1, 128)) / 256))


def _random(t: _Tensor, ttype: str, rng: np.random.Generator) -> np.ndarray:
    if t.std is None:
        return np.ones(t.shape, dtype=np.float32)
    if t.std == 0.0:
        return np.zeros(t.shape, dtype=np.float32)
    rows, cols = t.shape
    if ttype in ("q4_0", "q8_0"):
        q4 = ttype == "q4_0"
        n_blocks = rows * cols // QK
        payload = 16 if q4 else 32
        qs = np.frombuffer(rng.bytes(n_blocks * payload), dtype=np.uint8).reshape(n_blocks, payload)
        qs = (_Q4_LUT if q4 else _Q8_LUT)[qs]
        scale = np.float16(t.std / (_Q4_STD if q4 else _Q8_STD))
        blocks = np.empty((n_blocks, 2 + payload), dtype=np.uint8)
        blocks[:, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        blocks[:, 2:] = qs
        return blocks.reshape(rows, cols // QK * (2 + payload))
    w = rng.standard_normal(t.shape, dtype=np.float32)
    w *= t.std
    if ttype == "bf16":
        return _bf16_bits(w)
    return w.astype(np.float16) if ttype == "f16" else w


# ---------------------------------------------------------------------------------------------
# tokenizer

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable unicode map (the alphabet of byte-level BPE vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# pre-tokenizer regexes as llama.cpp names them (llama-vocab.cpp); anything else → "default"
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer_name(tok: dict[str, Any]) -> str:
    pre = tok.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    # pocketlm's space-token split ("\s" isolated) needs no regex of its own: no learned merge crosses
    # a space, so llama.cpp's regex for the rest gives the same tokens
    items = [p for p in items if not (p.get("type") == "Split" and p.get("behavior") == "Isolated"
                                      and (p.get("pattern") or {}).get("Regex") == r"\s")]
    types = [p.get("type") for p in items]
    if types == ["ByteLevel"] and items[0].get("use_regex", True):
        return "gpt-2"
    splits = [p for p in items if p.get("type") == "Split"]
    if splits and "ByteLevel" in types:
        regex = (splits[0].get("pattern") or {}).get("Regex", "")
        if regex == _QWEN2_RE:
            return "qwen2"
        if regex == _LLAMA3_RE:
            return "llama-bpe"
        if regex == _GPT2_RE:
            return "gpt-2"
    if "Digits" in types and "ByteLevel" in types:
        return "smollm"
    return "default"


def _add_tokenizer(writer, tokenizer_dir: Path, cfg: ModelConfig) -> None:
    import gguf

    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{tokenizer_dir} has no tokenizer.json (GGUF export supports Hugging Face "
                        "byte-level BPE tokenizers)")
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"malformed {path}: {e}") from None
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(f"{path}: tokenizer type {model.get('type')!r} can't be exported to GGUF yet "
                        "(supported: byte-level BPE)")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    for tid, a in added.items():
        vocab[a["content"]] = tid
    n = max(vocab.values()) + 1
    if n > cfg.vocab_size:
        raise UserError(f"tokenizer has {n} tokens but the model's vocab_size is {cfg.vocab_size}")
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(cfg.vocab_size):  # pad to the embedding size like convert_hf_to_gguf
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=cfg.vocab_size)
    if "eos" not in special.special_token_ids and cfg.eos_token_id is not None:
        special.special_token_ids["eos"] = cfg.eos_token_id
    if not special.chat_template:
        special.chat_template = None
    # say explicitly what Hugging Face adds (llama.cpp's defaults differ per vocabulary type)
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)


def _add_placeholder_vocab(writer, cfg: ModelConfig) -> None:
    """A byte-level vocabulary of the right size: llama.cpp loads it, times it and can even tokenize
    (byte by byte); ids past the 256 byte tokens are named <tN>."""
    import gguf

    if cfg.vocab_size < 258:
        raise UserError(f"vocab_size {cfg.vocab_size} is too small for a placeholder GGUF vocabulary "
                        "(need at least 258); export a checkpoint with a tokenizer instead")
    alphabet = _bytes_to_unicode()
    tokens = [alphabet[b] for b in range(256)] + ["ĠĠ"] + [f"<t{i}>" for i in range(257, cfg.vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * cfg.vocab_size)
    writer.add_token_merges(["Ġ Ġ"])  # llama.cpp requires at least one merge
    eos = cfg.eos_token_id if cfg.eos_token_id is not None and cfg.eos_token_id < cfg.vocab_size \
        else cfg.vocab_size - 1
    writer.add_eos_token_id(eos)
    writer.add_bos_token_id(cfg.bos_token_id if cfg.bos_token_id is not None else eos)
    writer.add_add_bos_token(False)
    writer.add_bool(PLACEHOLDER_KEY, True)


# ---------------------------------------------------------------------------------------------
# export

def _resolve(model_or_spec: Any, tokenizer_dir):
    """→ (cfg, weight getter or None for random, tokenizer dir or None)."""
    if isinstance(model_or_spec, ModelConfig):
        return model_or_spec, None, tokenizer_dir
    if type(model_or_spec).__name__ == "PocketLM":
        sd = model_or_spec.hf_state_dict()
        cfg = model_or_spec.config
    else:
        spec = str(model_or_spec)
        if spec.endswith(".gguf"):
            raise UserError(f"{spec} is already a GGUF file")
        weights = Path(spec)
        if is_checkpoint_dir(spec) and any((weights / f).exists() for f in (
                "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
            cfg = ModelConfig.from_file(weights / "config.json")
            sd = read_state_dict(weights)
            if tokenizer_dir is None and has_tokenizer(weights):
                tokenizer_dir = weights
        else:
            return resolve_config(spec), None, tokenizer_dir

    def get(name: str) -> np.ndarray:
        if name == "lm_head.weight" and name not in sd:
            name = "model.embed_tokens.weight"
        if name not in sd:
            raise UserError(f"checkpoint has no tensor {name!r}")
        return sd[name].detach().to("cpu").float().numpy()

    return cfg, get, tokenizer_dir


def _carried_files(model_or_spec: Any) -> dict[str, str]:
    """The checkpoint directory's own small JSON files (not the HF-standard ones), by name."""
    if not isinstance(model_or_spec, (str, os.PathLike)) or not Path(model_or_spec).is_dir():
        return {}
    return {f.name: f.read_text() for f in sorted(Path(model_or_spec).glob("*.json"))
            if f.name not in _STANDARD_JSON and f.stat().st_size <= _MAX_CARRIED_BYTES}


def export_gguf(model_or_spec: Any, out: str | os.PathLike, quant: str = "f16",
                tokenizer_dir: str | os.PathLike | None = None, seed: int = 0,
                progress: bool = False, output_quant: str | None = None) -> Path:
    """Write a GGUF file llama.cpp can run; returns its path.

    model_or_spec: a PocketLM, a ModelConfig, a preset name, a config file or a checkpoint dir.
    Without weights (config/preset) the weights are random, generated directly in `quant`'s layout.
    output_quant: the output matrix's type (the token embedding when tied), as llama-quantize's
    --output-tensor-type: a small model's vocabulary projection is its most quantization-sensitive matrix.
    """
    import gguf

    for q in (quant, output_quant or quant):
        if q not in QUANTS:
            raise UserError(f"unknown quant '{q}'; choose one of {', '.join(QUANTS)}")
    cfg, get, tokenizer_dir = _resolve(model_or_spec, tokenizer_dir)
    carried = _carried_files(model_or_spec)
    problems = llamacpp_problems(cfg)
    if problems:
        raise UserError("llama.cpp cannot run this config: " + "; ".join(problems))
    out = Path(out)
    arch = gguf_arch(cfg)
    plan = _plan(cfg)
    output = "token_embd.weight" if cfg.tie_embeddings else "output.weight"  # the vocabulary projection
    types = [_tensor_type(t, output_quant if output_quant and t.name == output else quant) for t in plan]
    qtypes = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
              "bf16": gguf.GGMLQuantizationType.BF16,
              "q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}
    t0 = time.perf_counter()
    with atomic_path(out) as tmp:  # a failed or killed export leaves no partial file
        _write(gguf.GGUFWriter(tmp, arch), cfg, plan, types, qtypes, quant, get, tokenizer_dir, seed,
               f"export {out.name}" if progress else None, carried)
    _log_export(out, quant, arch, time.perf_counter() - t0, progress)
    return out


def _write(writer, cfg: ModelConfig, plan: list, types: list[str], qtypes: dict, quant: str,
           get: Callable | None, tokenizer_dir, seed: int, progress_desc: str | None,
           carried: dict[str, str]) -> None:
    """Metadata, tensor infos and tensor data (random or from `get`), streamed one tensor at a time."""
    import gguf

    bar = None
    try:
        writer.add_name(cfg.name)
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_block_count(cfg.num_layers)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count(cfg.num_heads)
        writer.add_head_count_kv(cfg.num_kv_heads)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        writer.add_vocab_size(cfg.vocab_size)
        if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
            writer.add_key_length(cfg.head_dim)
            writer.add_value_length(cfg.head_dim)
        writer.add_file_type(_FILE_TYPE[quant])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_string(CONFIG_KEY, json.dumps(cfg.to_dict()))
        for name, text in carried.items():
            writer.add_string(FILE_KEY_PREFIX + name, text)
        if tokenizer_dir is not None:
            _add_tokenizer(writer, Path(tokenizer_dir), cfg)
        else:
            _add_placeholder_vocab(writer, cfg)

        for t, ttype in zip(plan, types):
            qt = qtypes[ttype]
            if ttype in ("q8_0", "q4_0"):
                size = (2 + (16 if ttype == "q4_0" else 32))
                byte_shape = (*t.shape[:-1], t.shape[-1] // QK * size)
                writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qt)
            else:
                dt = np.dtype({"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[ttype])
                writer.add_tensor_info(t.name, t.shape, dt, int(np.prod(t.shape)) * dt.itemsize,
                                       qt if ttype == "bf16" else None)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        rng = np.random.default_rng(seed)
        bar = _progress(len(plan), progress_desc) if progress_desc else None
        for t, ttype in zip(plan, types):
            if get is None:
                data = _random(t, ttype, rng)
            else:
                w = get(t.hf_name)
                if tuple(w.shape) != t.shape:
                    raise UserError(f"tensor {t.hf_name} has shape {tuple(w.shape)}, config expects {t.shape}")
                if t.permute_heads:
                    w = _permute(w, t.permute_heads)
                data = _encode(w, ttype)
            writer.write_tensor_data(data)
            if bar:
                bar.update(1)
    finally:
        if bar:  # before an error is printed: the message then starts on a line of its own
            bar.close()
        writer.close()


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", leave=False)


def _log_export(out: Path, quant: str, arch: str, seconds: float, verbose: bool) -> None:
    if verbose:
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {quant}, arch {arch}) in {seconds:.1f} s")


# ---------------------------------------------------------------------------------------------
# reading GGUF files back

def read_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """Validate a GGUF file and summarise it: {arch, config (ModelConfig or None), quant,
    placeholder_vocab, has_vocab, chat_template, n_tensors, size_bytes}.

    A corrupted or truncated file raises UserError. Parses only the header (fast even with a
    150k-token vocabulary, unlike gguf.GGUFReader which builds an object per token).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}")
    size = path.stat().st_size
    for limit in (4 << 20, 64 << 20, 1 << 30):  # headers are small; a big vocabulary takes a few MB
        try:
            meta, tensors, data_start = _parse_header(path, limit)
            break
        except _Malformed as e:
            if str(e) != _EARLY or limit >= size:
                raise UserError(f"cannot read {path} (corrupted or truncated GGUF?): {e}") from None
    else:
        raise UserError(f"cannot read {path}: GGUF header larger than 1 GB")
    for name, (shape, nbytes, offset) in tensors.items():
        if data_start + offset + nbytes > size:
            raise UserError(f"{path} is truncated: tensor {name} ends past the end of the file "
                            f"({data_start + offset + nbytes} > {size} bytes)")
    arch = meta.get("general.architecture", "")
    cfg = None
    if meta.get(CONFIG_KEY):
        try:
            cfg = ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        except (json.JSONDecodeError, UserError, TypeError):
            cfg = None
    if cfg is None and arch in ("llama", "qwen2"):
        cfg = _config_from_metadata(meta, tensors, arch)
    ftype = meta.get("general.file_type")
    quant = {v: k for k, v in _FILE_TYPE.items()}.get(ftype, None if ftype is None else f"ftype{ftype}")
    return {"arch": arch, "config": cfg, "quant": quant,
            "placeholder_vocab": bool(meta.get(PLACEHOLDER_KEY, False)),
            "has_vocab": meta.get("tokenizer.ggml.tokens") is not None,
            "n_vocab_tokens": meta.get("tokenizer.ggml.tokens") or 0,
            "chat_template": meta.get("tokenizer.chat_template"),
            "n_tensors": len(tensors), "size_bytes": size,
            "files": {k[len(FILE_KEY_PREFIX):]: v for k, v in meta.items() if k.startswith(FILE_KEY_PREFIX)}}


class _Malformed(Exception):
    pass


_EARLY = "header ends early"


def _parse_header(path: Path, limit: int) -> tuple[dict[str, Any], dict[str, tuple], int]:
    """(metadata, {tensor: (shape, nbytes, offset)}, data start). String arrays are returned as
    their length only (we never need the tokens themselves)."""
    import struct

    import gguf

    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            raise _Malformed(f"bad magic {head[:4]!r}" if len(head) >= 4 else "file too short")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
        if version not in (2, 3) or n_tensors > 1 << 24 or n_kv > 1 << 24:
            raise _Malformed(f"unsupported version {version} or absurd counts")
        buf = f.read(limit)
    pos = 0  # offset into buf (which starts after the 24-byte preamble)
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}

    def take(fmt: str):
        nonlocal pos
        try:
            value = struct.unpack_from(fmt, buf, pos)[0]
        except struct.error:
            raise _Malformed(_EARLY) from None
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        if pos + n > len(buf):
            raise _Malformed(_EARLY)
        s = buf[pos:pos + n]
        pos += n
        return s.decode("utf-8", errors="replace")

    def value(vtype: int):
        nonlocal pos
        if vtype in scalar:
            return take(scalar[vtype])
        if vtype == 8:
            return string()
        if vtype == 9:
            sub, n = take("<I"), take("<Q")
            if sub == 8:  # skip strings quickly
                for _ in range(n):
                    k = take("<Q")
                    pos += k
                if pos > len(buf):
                    raise _Malformed(_EARLY)
                return n
            if sub in scalar:
                width = struct.calcsize(scalar[sub])
                if pos + n * width > len(buf):
                    raise _Malformed(_EARLY)
                items = list(struct.unpack_from(f"<{n}{scalar[sub][1]}", buf, pos)) if n <= 4096 else n
                pos += n * width
                return items
            raise _Malformed(f"unsupported array type {sub}")
        raise _Malformed(f"unknown value type {vtype}")

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    tensors: dict[str, tuple] = {}
    for _ in range(n_tensors):
        name = string()
        n_dims = take("<I")
        if n_dims > 4:
            raise _Malformed(f"tensor {name} has {n_dims} dims")
        shape = [take("<Q") for _ in range(n_dims)]
        ttype, offset = take("<I"), take("<Q")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise _Malformed(f"tensor {name} has unknown type {ttype}") from None
        n = int(np.prod(shape)) if shape else 1
        tensors[name] = (tuple(shape), n // block * type_size, offset)
    align = int(meta.get("general.alignment", 32))
    data_start = 24 + pos
    data_start += (-data_start) % align
    return meta, tensors, data_start


def _config_from_metadata(meta: dict[str, Any], tensors: dict[str, tuple], arch: str) -> ModelConfig | None:
    """A ModelConfig from a GGUF made by another tool (llama.cpp's converter)."""
    try:
        hidden = int(meta[f"{arch}.embedding_length"])
        heads = int(meta[f"{arch}.attention.head_count"])
        ff = meta[f"{arch}.feed_forward_length"]
        vocab = meta.get(f"{arch}.vocab_size") or tensors["token_embd.weight"][0][-1]
        return ModelConfig(
            vocab_size=int(vocab), hidden_size=hidden, num_layers=int(meta[f"{arch}.block_count"]),
            num_heads=heads, num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv") or heads),
            head_dim=int(meta.get(f"{arch}.attention.key_length") or hidden // heads),
            intermediate_size=int(ff[0] if isinstance(ff, list) else ff),
            qkv_bias="blk.0.attn_q.bias" in tensors, tie_embeddings="output.weight" not in tensors,
            rope_theta=float(meta.get(f"{arch}.rope.freq_base") or 10000.0),
            max_position_embeddings=int(meta.get(f"{arch}.context_length") or 2048),
            norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon") or 1e-5),
            eos_token_id=meta.get("tokenizer.ggml.eos_token_id"), name=str(meta.get("general.name", "gguf")))
    except (TypeError, ValueError, KeyError, UserError):
        return None

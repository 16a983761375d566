"""GGUF export: layout, random quantized weights, tokenizer embedding, refusals, damaged files."""

import json

import numpy as np
import pytest

from pocketlm.model.config import ModelConfig
from pocketlm.errors import UserError
from pocketlm.runtime.gguf import QUANTS, export_gguf, llamacpp_problems, read_gguf

# dims are multiples of 32 so every matrix is really quantized (llama.cpp's block size)
CFG = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  intermediate_size=192, tie_embeddings=False, max_position_embeddings=256, name="t")


def test_llamacpp_problems_name_what_llamacpp_lacks():
    assert llamacpp_problems(CFG) == []
    assert llamacpp_problems(CFG.replace(qkv_bias=True)) == []  # qwen2 arch
    relu = llamacpp_problems(CFG.replace(activation="relu"))
    assert len(relu) == 1 and "relu" in relu[0] and "SiLU" in relu[0]
    assert any("gated" in p for p in llamacpp_problems(CFG.replace(gated_mlp=False)))


def test_export_refuses_unsupported_config_and_leaves_nothing(tmp_path):
    out = tmp_path / "m.gguf"
    with pytest.raises(UserError, match="relu"):
        export_gguf(CFG.replace(activation="relu"), out)
    with pytest.raises(UserError, match="quant"):
        export_gguf(CFG, out, quant="q5_k")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quant", QUANTS)
def test_random_export_roundtrips_config_and_types(tmp_path, quant):
    import gguf

    out = export_gguf(CFG, tmp_path / "m.gguf", quant=quant, seed=1)
    info = read_gguf(out)
    assert info["config"] == CFG and info["quant"] == quant and info["arch"] == "llama"
    assert info["placeholder_vocab"] and info["has_vocab"]
    reader = gguf.GGUFReader(out)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32
    assert types["blk.1.ffn_down.weight"] == quant.upper()
    assert types["output.weight"] == quant.upper() and "output.weight" in types  # untied head
    assert len(types) == 2 + 9 * CFG.num_layers + 1
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp file left


@pytest.mark.parametrize("quant", ["q4_0", "q8_0"])
def test_random_quantized_weights_are_sane(tmp_path, quant):
    """Random blocks written directly must dequantize to zero-mean weights with the init std."""
    import gguf

    out = export_gguf(CFG.replace(hidden_size=256, num_heads=8, num_kv_heads=8), tmp_path / "m.gguf",
                      quant=quant)
    reader = gguf.GGUFReader(out)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    assert w.shape == (192, 256) and np.isfinite(w).all()
    assert abs(w.mean()) < 1e-3 and 0.017 < w.std() < 0.023
    assert len(np.unique(w)) > 10  # not degenerate


@pytest.mark.parametrize("tied", [False, True])
def test_output_quant_sets_only_the_vocabulary_projection(tmp_path, tied):
    """--output-quant (llama-quantize's --output-tensor-type): the head, or the tied embedding, alone."""
    import gguf

    out = export_gguf(CFG.replace(tie_embeddings=tied), tmp_path / "m.gguf", quant="q4_0", output_quant="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    head = "token_embd.weight" if tied else "output.weight"
    assert types[head] == "Q8_0"
    assert {t for n, t in types.items() if n != head and not n.endswith("norm.weight")} == {"Q4_0"}
    assert read_gguf(out)["quant"] == "q4_0"  # llama.cpp's "mostly Q4_0"
    with pytest.raises(UserError, match="quant"):
        export_gguf(CFG, tmp_path / "x.gguf", quant="q4_0", output_quant="q5_k")


def test_unaligned_rows_fall_back_to_f16(tmp_path):
    import gguf

    cfg = CFG.replace(intermediate_size=176)  # ffn_down rows (176) are not a multiple of 32
    reader = gguf.GGUFReader(export_gguf(cfg, tmp_path / "m.gguf", quant="q4_0"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q4_0"


def test_qwen2_arch_for_qkv_bias_and_tied_head(tmp_path):
    cfg = CFG.replace(qkv_bias=True, tie_embeddings=True)
    info = read_gguf(export_gguf(cfg, tmp_path / "m.gguf", quant="f16"))
    assert info["arch"] == "qwen2" and info["config"] == cfg
    import gguf

    names = {t.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    assert "blk.0.attn_q.bias" in names and "output.weight" not in names


def test_permutation_matches_llamacpp_convention():
    from pocketlm.runtime.gguf import _permute

    # one head, head_dim 4: HF rows [x0, x1, y0, y1] (rotate-half pairs (x0,y0), (x1,y1))
    # → llama.cpp interleaved rows [x0, y0, x1, y1]
    w = np.arange(4)[:, None] * np.ones((1, 3))
    assert _permute(w, 1)[:, 0].tolist() == [0, 2, 1, 3]


def test_fast_random_export_of_a_large_config(tmp_path):
    """A ~0.1B-parameter q4_0 candidate exports in well under a few seconds (search exports dozens)."""
    import time

    from pocketlm.model.presets import get_preset

    t0 = time.perf_counter()
    out = export_gguf(get_preset("smollm2-135m"), tmp_path / "s.gguf", quant="q4_0")
    elapsed = time.perf_counter() - t0
    assert read_gguf(out)["config"].hidden_size == 576
    assert out.stat().st_size < 135e6 * 0.6  # ~4.5 bits per weight, not a full-precision file
    assert elapsed < 15


def _tiny_checkpoint(d, space_tokens=False, split_digits=True):
    from pocketlm.model.checkpoint import save_checkpoint
    from pocketlm.model.decoder import PocketLM
    from pocketlm.data.tokenizer import train_tokenizer

    words = ["the", "cat", "sat", "on", "a", "mat", "phone", "runs", "small", "models", "fast", "2024",
             "hello", "world", "alarm", "at", "7", "am", "set", "timer"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 12)) + "." for _ in range(400)]
    tok_dir = train_tokenizer(texts, vocab_size=320, out_dir=d / "tok", space_tokens=space_tokens,
                              split_digits=split_digits)
    cfg = CFG.replace(vocab_size=320, eos_token_id=0)
    save_checkpoint(PocketLM.from_config(cfg, seed=0), d / "model", tokenizer=tok_dir)
    return d / "model"


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A tiny checkpoint with a byte-level BPE tokenizer trained in-process."""
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.slow  # trains a tokenizer and imports transformers (module fixture)
def test_checkpoint_export_embeds_tokenizer_and_chat_template(tmp_path, trained_checkpoint, run_cli):
    code, out, err = run_cli("export", trained_checkpoint, "--format", "gguf", "--quant", "q8_0",
                             "--out", tmp_path / "m.gguf", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["vocabulary"] == "tokenizer" and summary["chat_template"]
    info = read_gguf(tmp_path / "m.gguf")
    assert not info["placeholder_vocab"] and "<|im_start|>" in info["chat_template"]
    assert info["n_vocab_tokens"] == 320


@pytest.mark.slow  # trains a tokenizer and imports transformers (module fixture)
@pytest.mark.parametrize("space_tokens,split_digits", [(False, True), (True, True), (True, False), (False, False)])
def test_llamacpp_tokenizes_like_hugging_face(tmp_path, space_tokens, split_digits):
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    from pocketlm.runtime.llamacpp import open_llama

    ckpt = _tiny_checkpoint(tmp_path, space_tokens=space_tokens, split_digits=split_digits)
    path = export_gguf(ckpt, tmp_path / "m.gguf", quant="f32")
    hf = AutoTokenizer.from_pretrained(str(ckpt))
    llm = open_llama(path, n_ctx=64, threads=1)
    try:
        for text in ["the cat sat on a mat.", "set timer at 7 am", "hello  world 2024!", 'query="the cat"',
                     "  indented\n\n\tmat (phone)", "<|im_start|>user\nhello<|im_end|>\n",
                     "alarm at 7:30, 2024 20242024 phone=7 2024"]:
            ids = llm.tokenize(text.encode(), add_bos=True, special=True)
            assert ids == hf.encode(text), text
            assert llm.detokenize(ids, special=True).decode() == text
        assert llm.token_eos() == hf.eos_token_id
    finally:
        llm.close()
    assert isinstance(llama_cpp.__version__, str)


@pytest.mark.slow  # trains a tokenizer and imports transformers (module fixture)
def test_checkpoint_with_damaged_safetensors_is_a_user_error(tmp_path, trained_checkpoint, run_cli):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_checkpoint, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, out, err = run_cli("export", bad, "--out", tmp_path / "m.gguf")
    assert code == 2 and "safetensors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("damage", ["truncate_header", "truncate_data", "garbage"])
def test_damaged_gguf_is_a_user_error(tmp_path, damage):
    good = export_gguf(CFG, tmp_path / "good.gguf", quant="q8_0")
    data = good.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"truncate_header": data[:2000], "truncate_data": data[: len(data) - 5000],
                     "garbage": b"not a gguf file at all" * 10}[damage])
    with pytest.raises(UserError, match="GGUF|truncated"):
        read_gguf(bad)


def test_bf16_encoding_rounds_like_torch():
    import torch

    from pocketlm.runtime.gguf import _bf16_bits

    w = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3
    w[:4] = [0.0, -0.0, 1e-40, 3.4e38]  # zero, signed zero, a subnormal, near max
    ref = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(_bf16_bits(w), ref)

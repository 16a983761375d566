"""The engine: torch ↔ llama.cpp greedy parity, streaming responses and stats, quantized exports, sampling,
timing protocol, CLI."""

import json

import numpy as np
import pytest
import torch

from pocketlm.errors import UserError
from pocketlm.model.config import ModelConfig
from pocketlm.model.decoder import PocketLM
from pocketlm.runtime.engine import GenerationResponse, load_runtime
from pocketlm.runtime.timing import measure
from pocketlm.runtime.sampling import sample_next

BASE = dict(vocab_size=512, hidden_size=64, num_layers=2, intermediate_size=192, max_position_embeddings=256)
CONFIGS = {
    "llama-gqa-untied": ModelConfig(num_heads=4, num_kv_heads=2, tie_embeddings=False, **BASE),
    "qwen2-bias-tied": ModelConfig(num_heads=4, num_kv_heads=2, qkv_bias=True, rope_theta=1e6,
                                   norm_eps=1e-6, **BASE),
    "headdim32-mqa": ModelConfig(num_heads=4, num_kv_heads=1, head_dim=32, **BASE),  # q_dim != hidden
}
PROMPT = [5, 17, 99, 3, 250, 7]


def _lively(cfg, seed=3):
    """Random weights large enough that greedy decoding wanders over many tokens (a parity check
    on a model that repeats one token would prove little)."""
    model = PocketLM.from_config(cfg, seed=seed)
    model.init_weights(seed, std=0.5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_llamacpp_f32_greedy_matches_torch_for_32_steps(name):
    pytest.importorskip("llama_cpp")
    model = _lively(CONFIGS[name])
    with load_runtime(model, backend="torch", threads=1) as rt:
        ours = rt.generate(PROMPT, max_new_tokens=32).tokens
        rt.prefill(PROMPT)
        torch_logits = rt._logits.numpy().copy()
    with load_runtime(model, backend="llamacpp", quant="f32", threads=1) as rt:
        theirs = rt.generate(PROMPT, max_new_tokens=32).tokens
        rt.prefill(PROMPT)
        llama_logits = np.array(rt._logits)
    assert len(set(ours)) > 10  # a meaningful sequence
    assert theirs == ours
    # llama.cpp keeps its KV cache in F16, so logits agree to ~1e-3 relative, not bit for bit
    cosine = torch_logits @ llama_logits / np.linalg.norm(torch_logits) / np.linalg.norm(llama_logits)
    assert cosine > 0.99999
    assert np.abs(torch_logits - llama_logits).max() < 0.01 * np.abs(torch_logits).max()


def _stream(rt, prompt, **kw) -> list[GenerationResponse]:
    return list(rt.stream_generate(prompt, **kw))


def test_engine_streams_the_same_greedy_tokens_on_torch_and_llamacpp():
    pytest.importorskip("llama_cpp")
    model = _lively(CONFIGS["qwen2-bias-tied"])
    streams = {}
    for backend in ("torch", "llamacpp"):
        with load_runtime(model, backend=backend, quant="f32", threads=1) as rt:
            streams[backend] = _stream(rt, PROMPT, max_new_tokens=12)
    for responses in streams.values():
        *steps, last = responses
        assert len(steps) == 12 and all(r.finish_reason is None and r.token is not None for r in steps)
        assert last.token is None and last.finish_reason == "length" and last.generation_tokens == 12
    tokens = {b: [r.token for r in rs[:-1]] for b, rs in streams.items()}
    assert len(set(tokens["torch"])) > 4 and tokens["llamacpp"] == tokens["torch"]


def test_engine_stats_are_present_and_positive_on_every_call():
    with load_runtime(_lively(CONFIGS["llama-gqa-untied"]), backend="torch", threads=1) as rt:
        for n in (2, 5, 9):
            responses = _stream(rt, PROMPT, max_new_tokens=n)
            for r in responses:
                assert r.prompt_tokens == len(PROMPT) and r.ttft_s > 0 and r.prompt_tok_s > 0 and r.peak_mem_mb > 0
            last = responses[-1]
            assert last.gen_tok_s > 0 and last.generation_tokens == n
            result = rt.generate(PROMPT, max_new_tokens=n)
            assert result.ttft_s > 0 and result.prompt_tok_s > 0 and result.gen_tok_s > 0 and result.peak_mem_mb > 0


def test_engine_stop_tokens_finish_reason_and_logits_processor():
    with load_runtime(_lively(CONFIGS["llama-gqa-untied"]), backend="torch", threads=1) as rt:
        greedy = rt.generate(PROMPT, max_new_tokens=10).tokens
        stop = greedy[4]
        responses = _stream(rt, PROMPT, max_new_tokens=10, stop_ids=[stop])
        assert [r.token for r in responses[:-1]] == greedy[:greedy.index(stop)]
        assert responses[-1].finish_reason == "stop" and rt.generate(PROMPT, 10, stop_ids=[stop]).stopped
        # a processor sees the tokens generated so far and decides what can be sampled
        seen = []

        def only_seven(tokens, logits):
            seen.append(list(tokens))
            keep = torch.full_like(logits, float("-inf"))
            keep[7] = 0.0
            return keep
        assert rt.generate(PROMPT, 4, logits_processor=only_seven).tokens == [7, 7, 7, 7]
        assert seen == [[], [7], [7, 7], [7, 7, 7]]
        with pytest.raises(UserError, match="max_new_tokens"):
            rt.generate(PROMPT, 0)


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0", "q4_0"])
def test_quantized_exports_load_and_generate(quant):
    pytest.importorskip("llama_cpp")
    model = PocketLM.from_config(CONFIGS["llama-gqa-untied"], seed=0)
    with load_runtime(model, backend="llamacpp", quant="f32", threads=1) as rt:
        rt.prefill(PROMPT)
        ref = np.array(rt._logits)
    with load_runtime(model, backend="llamacpp", quant=quant, threads=1) as rt:
        assert rt.quant == quant
        result = rt.generate(PROMPT, max_new_tokens=16)
        rt.prefill(PROMPT)
        logits = np.array(rt._logits)
    assert len(result.tokens) == 16 and all(0 <= t < 512 for t in result.tokens)
    assert np.isfinite(logits).all()
    cosine = float(ref @ logits / np.linalg.norm(ref) / np.linalg.norm(logits))
    # the quantized layout is right: 16-bit floats are near-exact, 8-bit close, 4-bit recognisable
    assert cosine > {"f16": 0.9999, "bf16": 0.999, "q8_0": 0.99, "q4_0": 0.9}[quant]


def test_random_config_on_llamacpp_with_placeholder_vocab(tmp_path):
    pytest.importorskip("llama_cpp")
    from pocketlm.model.presets import get_preset

    cfg = get_preset("tiny")  # intermediate 176: ffn_down falls back to F16 in a q4_0 export
    rt = load_runtime("tiny", backend="llamacpp", quant="q4_0", threads=1, cache_dir=tmp_path)
    with rt:
        assert rt.config == cfg and rt.n_ctx == cfg.max_position_embeddings  # capped at the model's max
        m = measure(rt, prompt_len=32, decode_len=8, repeats=2, warmup=1)
        assert not rt.has_tokenizer
    for key in ("ttft_s", "prefill_tok_s", "decode_tok_s", "e2e_s", "peak_rss_mb",
                "ttft_spread", "prefill_spread", "decode_spread"):
        assert m[key] >= 0, key
    assert m["prefill_tok_s"] > 0 and m["decode_tok_s"] > 0
    assert m["e2e_s"] == pytest.approx(m["ttft_s"] + 8 / m["decode_tok_s"])
    cached = list(tmp_path.glob("*.gguf"))
    assert len(cached) == 1 and cached[0].name.startswith(cfg.shape_key() + "-q4_0-s0")
    load_runtime(cfg, backend="llamacpp", quant="q4_0", threads=1, cache_dir=tmp_path).close()
    assert list(tmp_path.glob("*.gguf")) == cached  # reused, not re-exported


def test_torch_runtime_prefill_decode_and_measure():
    rt = load_runtime("tiny", backend="torch", threads=1, seed=0)
    t = rt.prefill(list(range(20)))
    steps = rt.decode(5)
    assert t > 0 and len(steps) == 5 and rt.pos == 25
    m = measure(rt, prompt_len=16, decode_len=4, repeats=2)
    assert m["backend"] == "torch" and m["decode_tok_s"] > 0
    # the KV-cached loop picks the same tokens as a full forward pass over the growing sequence
    seq = list(range(20))
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(rt.model(torch.tensor([seq]))[0, -1].argmax()))
    assert rt.generate(list(range(20)), max_new_tokens=6).tokens == seq[20:]


def test_context_limits_and_bad_specs(tmp_path):
    rt = load_runtime("tiny", backend="torch", threads=1)  # max_position_embeddings 512
    with pytest.raises(UserError, match="maximum context of 512"):
        rt.prefill([1] * 513)
    with pytest.raises(UserError, match="maximum context"):
        measure(rt, prompt_len=500, decode_len=20)
    with pytest.raises(UserError, match="outside the vocabulary"):
        rt.generate([600])
    small = load_runtime("tiny", backend="torch", threads=1, n_ctx=64)
    with pytest.raises(UserError, match="n-ctx"):
        small.prefill([1] * 65)
    with pytest.raises(UserError, match="backend"):
        load_runtime("tiny", backend="onnx")
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(UserError, match="torch backend can't run a GGUF"):
        load_runtime(gguf_file, backend="torch")
    with pytest.raises(UserError, match="relu"):
        load_runtime("tiny-relu", backend="llamacpp")


def test_sampling_controls():
    rt = load_runtime(_lively(CONFIGS["llama-gqa-untied"]), backend="torch", threads=1)
    greedy = rt.generate(PROMPT, max_new_tokens=12).tokens
    assert rt.generate(PROMPT, max_new_tokens=12, temperature=0.8, top_k=1, seed=5).tokens == greedy
    assert rt.generate(PROMPT, max_new_tokens=12, temperature=0.8, top_p=1e-6, seed=5).tokens == greedy
    a = rt.generate(PROMPT, max_new_tokens=12, temperature=1.5, seed=1).tokens
    assert a == rt.generate(PROMPT, max_new_tokens=12, temperature=1.5, seed=1).tokens  # seeded
    assert a != greedy
    # stop tokens end generation and are not returned
    assert rt.generate(PROMPT, max_new_tokens=12, stop_ids=[greedy[3]]).tokens == greedy[:greedy.index(greedy[3])]
    # top-k keeps only the k best: sampling never leaves them
    logits = torch.tensor([0.0, 5.0, 4.0, -1.0, 3.0])
    gen = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 2.0, top_k=2, generator=gen) for _ in range(200)} == {1, 2}
    with pytest.raises(UserError):
        rt.generate(PROMPT, temperature=-1)


def test_peak_rss_tracks_allocations():
    # A fresh process: after a long suite, freed-but-resident memory blurs the watermark.
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from pocketlm.runtime.timing import peak_rss_mb, reset_peak_rss\n"
            "if not reset_peak_rss(): print('unsupported'); raise SystemExit\n"
            "before = peak_rss_mb()\n"
            "block = np.ones(256 * 1024 * 1024 // 8)\n"
            "print(peak_rss_mb() - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if out.strip() == "unsupported":
        pytest.skip("this kernel cannot reset the peak-RSS watermark")
    assert float(out) >= 128


def test_cli_generate(run_cli, tmp_path):
    pytest.importorskip("llama_cpp")
    code, out, err = run_cli("generate", "tiny", "--prompt-ids", "1,2,3", "--backend", "torch",
                             "--max-new-tokens", "8", "--threads", "1")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines[0].split()) == 8
    assert "prompt: 3 tokens" in lines[-1] and "tok/s" in lines[-1] and "peak memory" in lines[-1]
    code, out, err = run_cli("generate", "tiny", "--prompt-ids", "1,2,3", "--backend", "llamacpp",
                             "--quant", "q8_0", "--max-new-tokens", "5", "--greedy", "--json", "--threads", "1")
    assert code == 0, err
    result = json.loads(out)
    assert len(result["tokens"]) == 5 and result["gen_tok_s"] > 0 and result["backend"] == "llamacpp"
    code, out, err = run_cli("generate", "tiny", "--prompt", "hello")
    assert code == 2 and "--prompt-ids" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "cut.gguf"
    from pocketlm.runtime.gguf import export_gguf

    data = export_gguf("tiny", tmp_path / "ok.gguf", quant="f16").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, out, err = run_cli("generate", bad, "--prompt-ids", "1,2")
    assert code == 2 and "truncated" in err
    code, out, err = run_cli("generate", "tiny", "--prompt-ids", "1,2", "--max-new-tokens", "600")
    assert code == 2 and "maximum context" in err


@pytest.mark.slow  # trains a tokenizer, imports transformers
def test_cli_generate_text_with_tokenizer(run_cli, tmp_path):
    """--prompt TEXT and --chat on a checkpoint with a tokenizer, on both backends."""
    pytest.importorskip("llama_cpp")
    from pocketlm.model.checkpoint import save_checkpoint
    from pocketlm.data.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    words = ["set", "an", "alarm", "for", "seven", "call", "mom", "open", "the", "camera"]
    tok = train_tokenizer([" ".join(rng.choice(words, 10)) for _ in range(300)], vocab_size=300,
                          out_dir=tmp_path / "tok")
    cfg = CONFIGS["llama-gqa-untied"].replace(vocab_size=300, eos_token_id=0)
    save_checkpoint(PocketLM.from_config(cfg, seed=0), tmp_path / "ckpt", tokenizer=tok)
    outputs = {}
    for backend in ("torch", "llamacpp"):
        code, out, err = run_cli("generate", tmp_path / "ckpt", "--prompt", "set an alarm", "--chat",
                                 "--backend", backend, "--quant", "f32", "--max-new-tokens", "6",
                                 "--threads", "1", "--json")
        assert code == 0, err
        outputs[backend] = json.loads(out)
        assert outputs[backend]["prompt_tokens"] > 5 and isinstance(outputs[backend]["text"], str)
    assert outputs["torch"]["tokens"] == outputs["llamacpp"]["tokens"]
    assert outputs["torch"]["prompt_tokens"] == outputs["llamacpp"]["prompt_tokens"]


@pytest.mark.slow  # builds a tiny checkpoint (tokenizer training + transformers import)
def test_engine_takes_chat_messages_and_streams_text(tiny_ckpt):
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "set an alarm for 7"}]
    with load_runtime(tiny_ckpt, backend="torch", threads=1) as rt:
        responses = list(rt.stream_generate(messages, max_new_tokens=12))
        ids = rt.encode_messages(messages)
        ref = rt.generate(ids, 12, stop_ids=rt.end_of_turn_ids())
    hf = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    assert ids == list(hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])
    assert responses[-1].prompt_tokens == len(ids) and responses[-1].finish_reason in ("stop", "length")
    assert [r.token for r in responses if r.token is not None] == ref.tokens and ref.tokens
    assert "".join(r.text for r in responses) == ref.text == hf.decode(ref.tokens, skip_special_tokens=True)


def test_cli_generate_sampling_flags(run_cli):
    def tokens(*flags):
        code, out, err = run_cli("generate", "tiny", "--prompt-ids", "1,2,3", "--backend", "torch", "--threads", "1",
                                 "--max-new-tokens", "12", "--json", *flags)
        assert code == 0, err
        return json.loads(out)["tokens"]

    greedy = tokens("--greedy")
    hot = tokens("--temperature", "5", "--seed", "1")
    assert hot != greedy and hot == tokens("--temperature", "5", "--seed", "1")  # sampled, and seeded
    assert tokens("--temperature", "5", "--seed", "2") != hot
    assert tokens("--temperature", "5", "--top-k", "1", "--seed", "1") == greedy  # top-k 1 is greedy
    assert tokens("--temperature", "5", "--top-p", "1e-9", "--seed", "1") == greedy  # so is a tiny nucleus
    assert tokens("--greedy", "--temperature", "5") == greedy  # --greedy wins
    code, _, err = run_cli("generate", "tiny", "--prompt-ids", "1", "--backend", "torch", "--top-p", "0")
    assert code == 2 and "top_p" in err

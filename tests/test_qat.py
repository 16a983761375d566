"""Quantization-aware LoRA (`qat: q4_0|q8_0`): the fake quantization is the export's own rounding, the
training forward pass is the quantized merged model, and the GGUF export holds those very weights."""

import json

import gguf
import numpy as np
import pytest
import torch

from pocketlm.errors import UserError
from pocketlm.model.checkpoint import load_checkpoint, save_checkpoint
from pocketlm.model.decoder import PocketLM
from pocketlm.model.presets import get_preset
from pocketlm.runtime.gguf import export_gguf
from pocketlm.train.lora import apply_lora
from pocketlm.train.qat import enable_qat, fake_quant, merge_quantized, quantize_dequantize, set_qat_active
from pocketlm.train.trainer import Trainer, TrainerConfig

QTYPES = {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q8_0": gguf.GGMLQuantizationType.Q8_0}


def _awkward_weights(rows=48, cols=96, seed=0) -> torch.Tensor:
    """Normal values plus the cases rounding gets wrong: zero blocks, outliers of either sign, ties."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[0, :32] = 0.0
    w[1, 5] = 3.0
    w[2, 40] = -3.0
    w[3, :32] = torch.arange(-16, 16) / 16.0  # values landing exactly on half steps
    return w


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_fake_quantization_equals_gguf_encode_then_decode(qtype):
    w = _awkward_weights()
    want = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), QTYPES[qtype]), QTYPES[qtype])
    got = quantize_dequantize(w, qtype).numpy()
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, w.numpy())  # it does round


def test_straight_through_gradient_is_the_identity():
    w = _awkward_weights().requires_grad_()
    upstream = torch.randn_like(w)
    (fake_quant(w, "q4_0") * upstream).sum().backward()
    torch.testing.assert_close(w.grad, upstream)


def _lora_model(seed=0):
    torch.manual_seed(seed)
    model = apply_lora(PocketLM.from_config(get_preset("tiny"), seed=0), r=4, alpha=8,
                       targets="q,k,v,o,gate,up,down")
    with torch.no_grad():  # lora_B starts at zero; make the adapter do something
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def _qat_copy():
    model = _lora_model()
    enable_qat(model, "q4_0")
    return model


def test_qat_forward_is_the_quantized_merged_model_and_trains_the_adapter():
    x = torch.randint(0, 512, (2, 16))
    plain = _lora_model()
    qat = _lora_model()
    # tiny's MLP is 176 wide: down_proj rows are not whole 32-blocks, so the export keeps them F16
    assert enable_qat(qat, "q4_0") == 2 * 6
    reference = _lora_model().merge_and_unload()
    with torch.no_grad():
        for name, module in reference.named_modules():
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "down_proj" and "layers" in name:
                module.weight.copy_(quantize_dequantize(module.weight, "q4_0"))
        want = reference(x)
        got = qat(x)
        unquantized = plain(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - unquantized).abs().max() > 1e-3  # the rounding is felt
    with torch.no_grad():  # the saved checkpoint is the model QAT trained: rounded, and rounding is idempotent
        merged = merge_quantized(_qat_copy())
        torch.testing.assert_close(merged(x), got, rtol=1e-4, atol=1e-4)
        q = merged.state_dict()["model.layers.0.self_attn.q_proj.weight"]
        assert torch.equal(quantize_dequantize(q, "q4_0"), q)
    loss = torch.nn.functional.cross_entropy(qat(x).flatten(0, 1), torch.randint(0, 512, (32,)))
    loss.backward()
    grads = {n: p.grad for n, p in qat.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_a_float_phase_runs_peft_unrounded_until_the_trainer_turns_qat_on():
    """qat_start: before the switch a QAT model is the plain LoRA model and saves unrounded; the trainer's
    step hook, called with the steps done (so a resumed run switches at the same step), turns it on."""
    x = torch.randint(0, 512, (2, 16))
    plain, qat = _lora_model(), _qat_copy()
    set_qat_active(qat, False)
    with torch.no_grad():
        torch.testing.assert_close(qat(x), plain(x))
        ended_in_float = _qat_copy()
        set_qat_active(ended_in_float, False)
        name = "model.layers.0.self_attn.q_proj.weight"
        assert torch.equal(merge_quantized(ended_in_float).state_dict()[name],
                           _lora_model().merge_and_unload().state_dict()[name])
    seen = []

    def batches():
        while True:
            yield {"input_ids": x, "labels": x}

    def hook(step):
        set_qat_active(qat, step >= 2)
        seen.append((step, qat.base_model.model.model.layers[0].self_attn.q_proj._qat_active))

    trainer = Trainer(qat, lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.0),
                      lambda step: 0.0, batches(), TrainerConfig(max_steps=4, log_every=0), on_step_start=hook)
    trainer.fit(resume=False)
    assert seen == [(0, False), (1, False), (2, True), (3, True)]


def test_qat_refuses_dropout_and_full_finetuning(tmp_path, run_cli):
    model = apply_lora(PocketLM.from_config(get_preset("tiny"), seed=0), r=4, dropout=0.1, targets="q,v")
    with pytest.raises(UserError, match="lora_dropout"):
        enable_qat(model, "q4_0")
    with pytest.raises(UserError, match="method: lora"):
        enable_qat(PocketLM.from_config(get_preset("tiny"), seed=0), "q4_0")
    code, _, err = run_cli("finetune", "instruct-tiny", "--method", "full", "--qat", "q4_0", "--dry-run")
    assert code == 2 and "qat" in err and "\n" not in err.strip()
    code, _, err = run_cli("finetune", "instruct-tiny", "--qat-start", 0.5, "--dry-run")
    assert code == 2 and "qat_start" in err and "\n" not in err.strip()


@pytest.mark.slow
def test_qat_finetune_exports_exactly_the_weights_it_trained_through(tmp_path, run_cli):
    """A qat: q4_0 fine-tune (float first, then QAT) saves its rounded weights, and the Q4_0 export stores
    exactly those."""
    from gguf import GGUFReader

    from pocketlm.data.tokenizer import train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat and the dog ran far away"] * 50, 300, tmp_path / "tok")
    cfg = get_preset("tiny")
    save_checkpoint(PocketLM.from_config(cfg, seed=0), tmp_path / "base", tokenizer=str(tok))
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(
        '{"messages": [{"role": "user", "content": "where is the cat %d"}, '
        '{"role": "assistant", "content": "the cat sat on the mat"}]}\n' % i for i in range(16)))
    code, _, err = run_cli("finetune", "instruct-tiny", "--base", tmp_path / "base", "--data", data,
                           "--out", tmp_path / "run", "--method", "lora", "--lora-targets", "q,k,v,o,gate,up,down",
                           "--qat", "q4_0", "--qat-start", 0.5, "--max-steps", 4, "--batch-size", 4,
                           "--lr", 1e-2, "--pad-to-multiple-of", 16, "--save-every", 0, "--log-every", 0)
    assert code == 0, err
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics if "step" in m] == ["float", "float", "qat", "qat"]
    final = load_checkpoint(tmp_path / "run" / "final")
    base = load_checkpoint(tmp_path / "base")
    q_final = final.state_dict()["model.layers.1.self_attn.q_proj.weight"]
    assert not torch.equal(q_final, base.state_dict()["model.layers.1.self_attn.q_proj.weight"])  # it trained
    gguf_path = export_gguf(str(tmp_path / "run" / "final"), tmp_path / "m.gguf", quant="q4_0")
    tensors = {t.name: t for t in GGUFReader(str(gguf_path)).tensors}
    for name, hf_name in (("blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"),
                          ("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight")):
        t = tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q4_0
        saved = final.state_dict()[hf_name]
        stored = gguf.quants.dequantize(t.data, t.tensor_type).reshape(saved.shape)
        np.testing.assert_array_equal(stored, saved.numpy())

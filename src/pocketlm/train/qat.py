"""Quantization-aware LoRA fine-tuning: train the weights llama.cpp will run.

A Q4_0 export of the fine-tuned SmolLM2-135M intent model lost 10.5 points of accuracy against its
float checkpoint. With the recipe field ``qat: q4_0`` every LoRA-wrapped linear layer computes with
``fake_quant(W + scaling * B @ A)``: the forward pass sees the merged weight exactly as the GGUF export
will round it (gguf-py's / llama.cpp's reference rounding: a 32-value block, an fp16 scale), and the
straight-through estimator hands the gradient to A and B as if rounding were the identity.

The trained model is the rounded one: the float weights behind it are an optimizer's latent variable
(measured: a Q4_0-QAT intent model scored 80.5% through its Q4_0 export and 75.0% on its unrounded
weights). So `merge_quantized` saves each trained layer already rounded. Rounding is idempotent, so the
checkpoint on torch, its Q4_0 export (bit-identical blocks) and its Q8_0 export all run that model.
The latent LoRA stays in the run's adapter/.

``qat_start`` (a fraction of the steps) trains the first part of the run in float and turns the rounding
on after it (`set_qat_active`): the float phase starts from the unrounded base at the float run's loss,
and the QAT phase then adapts the trained model to the rounding.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from pocketlm.errors import UserError
from pocketlm.runtime.gguf import QK

QAT_TYPES = ("none", "q4_0", "q8_0")


def quantize_dequantize(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """Round `w` (last dim a multiple of 32) as gguf-py's Q4_0/Q8_0 encoders do, and decode it back."""
    blocks = w.float().reshape(-1, QK)
    if qtype == "q4_0":
        # d = (the value of largest magnitude) / -8; nibble = clip(trunc(x / d + 8.5), 0, 15); x' = (nibble - 8) * d
        peak = blocks.gather(1, blocks.abs().argmax(dim=1, keepdim=True))
        d = peak / -8
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        q = torch.clamp(torch.trunc(blocks * inv + 8.5), 0, 15) - 8
    elif qtype == "q8_0":
        # d = max |x| / 127; q = round half away from zero (x / d); x' = q * d
        d = blocks.abs().amax(dim=1, keepdim=True) / 127
        inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
        scaled = blocks * inv
        q = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    else:
        raise ValueError(f"no fake quantization for {qtype!r}")
    scale = d.to(torch.float16).float()  # the scale is stored as fp16
    return (q * scale).reshape(w.shape).to(w.dtype)


def fake_quant(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """Quantized values forward, identity gradient backward (straight-through estimator)."""
    return w + (quantize_dequantize(w.detach(), qtype) - w).detach()


def _qat_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft LoRA Linear forward on the merged, fake-quantized weight (peft's own while QAT is off)."""
    if not self._qat_active:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    weight = base.weight.float()
    with torch.autocast(x.device.type, enabled=False):  # merge in fp32, as merge_and_unload will
        for name in self.active_adapters:
            if name in self.lora_A:
                weight = weight + self.get_delta_weight(name).float()
        weight = fake_quant(weight, self._qat_type)
    return F.linear(x, weight.to(x.dtype), base.bias)


def enable_qat(peft_model, qtype: str) -> int:
    """Make every LoRA linear of `peft_model` train through `qtype` rounding; returns how many."""
    if qtype == "none":
        return 0
    if qtype not in QAT_TYPES:
        raise UserError(f"qat must be one of {', '.join(QAT_TYPES)}, got {qtype!r}")
    from peft.tuners.lora import Linear as LoraLinear

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLinear)]
    if not layers:
        raise UserError("qat needs method: lora (it fake-quantizes the merged LoRA weights)")
    if any(getattr(d, "p", 0) > 0 for layer in layers for d in layer.lora_dropout.values()):
        raise UserError("qat needs lora_dropout: 0 (dropout acts on activations, not on the merged weight)")
    # the export stores rows that are not a whole number of blocks as F16 (runtime.gguf._tensor_type):
    # those layers train unrounded, as they will run
    quantized = [layer for layer in layers if layer.base_layer.weight.shape[-1] % QK == 0]
    for layer in quantized:
        layer._qat_type, layer._qat_active = qtype, True
        layer.forward = types.MethodType(_qat_forward, layer)
    return len(quantized)


def set_qat_active(peft_model, active: bool) -> None:
    """Turn the rounding of every QAT layer on or off (a float phase before the QAT phase)."""
    for module in peft_model.modules():
        if getattr(module, "_qat_type", None):
            module._qat_active = active


def merge_quantized(peft_model):
    """peft's merge_and_unload, with every QAT layer's merged weight rounded as it was trained (a run
    without QAT has none: this is then merge_and_unload; a run that ends in float is saved unrounded)."""
    prefix = "base_model.model."
    rounded = {name.removeprefix(prefix): module._qat_type for name, module in peft_model.named_modules()
               if getattr(module, "_qat_type", None) and module._qat_active}
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        for name, module in merged.named_modules():
            if name in rounded:
                module.weight.data = quantize_dequantize(module.weight.float(), rounded[name])  # fp32 holds it exactly
    return merged


__all__ = ["QAT_TYPES", "quantize_dequantize", "fake_quant", "enable_qat", "set_qat_active", "merge_quantized"]

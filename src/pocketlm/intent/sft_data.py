"""DroidCall data for `pocketlm finetune`: the recipe fields, record conversion and built-in source that
fine-tuning a function caller needs, plugged into the generic fine-tuning as a recipe subclass.

- DroidCall records (``query`` + ``answers``) become conversations rendered with the code_short prompt
  (`to_sft_records`, ``candidates`` functions listed, ``doc_style`` docs);
- the source ``droidcall-synth`` synthesises ``synth_samples`` training requests offline;
- the final checkpoint gets ``intent.json`` (`write_intent_meta`), so `pocketlm intent` prompts and
  decodes it the way it was trained.

Importing this module (pocketlm.intent does) registers `IntentFinetuneRecipe` as the recipe type of
`pocketlm finetune`; other data works as before.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pocketlm.intent.grammar import learn_copy_args, save_intent_meta
from pocketlm.intent.prompt import to_sft_records
from pocketlm.intent.specs import Sample, check_answers, load_specs, normalize_answers
from pocketlm.intent.synth import synthesize
from pocketlm.train.finetune import FinetuneRecipe, register_recipe_type
from pocketlm.train.sft import looks_local, read_jsonl_records

SYNTH_SOURCE = "droidcall-synth"


@dataclass
class IntentFinetuneRecipe(FinetuneRecipe):
    synth_samples: int = 2000  # droidcall-synth: training samples to generate
    synth_multi_fraction: float = 0.3  # droidcall-synth: share of multi-call requests
    candidates: int = 4  # DroidCall records: functions listed in the code_short prompt
    doc_style: str = "full"  # DroidCall records: full (DroidCall's code docs) | brief (one-line docs)

    POSITIVE: ClassVar[tuple[str, ...]] = FinetuneRecipe.POSITIVE + ("synth_samples", "candidates")
    FRACTIONS: ClassVar[tuple[str, ...]] = FinetuneRecipe.FRACTIONS + ("synth_multi_fraction",)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {**FinetuneRecipe.CHOICES, "doc_style": ("full", "brief")}

    def synthesize(self) -> list[Sample]:
        return synthesize(self.synth_samples, seed=self.seed, split="train", multi_fraction=self.synth_multi_fraction)

    def read_records(self, spec: str, split: str, skipped: Counter) -> list[Any]:
        if spec == SYNTH_SOURCE:
            return [s.to_json() for s in self.synthesize()]
        return super().read_records(spec, split, skipped)

    def to_conversations(self, records: list[Any], skipped: Counter) -> list[list[dict]]:
        droidcall = [r for r in records if is_droidcall(r)]
        convs = droidcall_to_messages(droidcall, self.seed, self.candidates, self.doc_style, skipped) \
            if droidcall else []
        return convs + super().to_conversations([r for r in records if not is_droidcall(r)], skipped)

    def finish_checkpoint(self, ckpt_dir: str | os.PathLike) -> None:
        write_intent_meta(self, ckpt_dir)


register_recipe_type(IntentFinetuneRecipe)


def is_droidcall(record: Any) -> bool:
    return isinstance(record, dict) and "query" in record and "answers" in record


def _samples(records: list[dict], skipped: Counter) -> list[Sample]:
    """Well-formed DroidCall records as Samples; the others are counted as malformed."""
    samples = []
    for r in records:
        if not isinstance(r.get("query"), str) or check_answers(r.get("answers")):
            skipped["malformed_droidcall"] += 1
            continue
        samples.append(Sample(r["query"], normalize_answers(r["answers"])))
    return samples


def droidcall_to_messages(records: list[dict], seed: int, k: int, doc_style: str,
                          skipped: Counter) -> list[list[dict]]:
    samples = _samples(records, skipped)
    out = [rec["messages"] for rec in to_sft_records(samples, load_specs(), seed=seed, k=k, doc_style=doc_style)]
    skipped["unknown_function"] += len(samples) - len(out)
    return out


def load_chat_data(spec: str, *, split: str = "train", config: str | None = None,
                   messages_field: str = "messages", seed: int = 0, candidates: int = 4, doc_style: str = "full",
                   synth_samples: int = 2000, synth_multi_fraction: float = 0.3,
                   ) -> tuple[list[list[dict]], Counter]:
    """`pocketlm.train.sft.load_chat_data` that also reads DroidCall records and ``droidcall-synth``."""
    recipe = IntentFinetuneRecipe(data=spec, data_config=config, messages_field=messages_field,
                                  seed=seed, candidates=candidates, doc_style=doc_style,
                                  synth_samples=synth_samples, synth_multi_fraction=synth_multi_fraction)
    return recipe.load_conversations(spec, split)


def write_intent_meta(recipe: IntentFinetuneRecipe, ckpt_dir: str | os.PathLike) -> Path | None:
    """For DroidCall training data (the synthesizer or local JSONL): save how the model was prompted and
    which arguments the data copies verbatim from the request (`pocketlm.intent.grammar`), so
    `pocketlm intent` prompts and decodes the checkpoint the way it was trained. None for other data."""
    if recipe.data == SYNTH_SOURCE:
        samples = recipe.synthesize()
    elif looks_local(recipe.data) and not recipe.data.startswith("hf:"):
        records = [r for r in read_jsonl_records(recipe.data, Counter()) if is_droidcall(r)]
        samples = _samples(records, Counter())
    else:
        return None
    if not samples:
        return None
    return save_intent_meta(ckpt_dir, doc_style=recipe.doc_style, candidates=recipe.candidates,
                            copy_args=learn_copy_args(samples))


__all__ = ["IntentFinetuneRecipe", "SYNTH_SOURCE", "is_droidcall", "droidcall_to_messages", "load_chat_data",
           "write_intent_meta"]

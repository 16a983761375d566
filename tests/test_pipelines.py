"""The tiny intent pipeline end to end (smoke-sized budgets: the numbers are meaningless, the plumbing is not)."""

import json

import pytest


@pytest.mark.slow  # tokenizer + 3 pre-training steps + 3 fine-tuning steps + 2 x 6 generations
def test_intent_tiny_pipeline_writes_every_stage(tmp_path):
    from pocketlm.intent.grammar import load_intent_meta
    from pocketlm.intent.pipeline import IntentTinyConfig, intent_tiny

    cfg = IntentTinyConfig(n_train=64, n_test=6, corpus_mb=0.2, pretrain_steps=3, max_new_tokens=24,
                           finetune={"max_steps": 3, "synth_samples": 64, "save_every": 0})
    res = intent_tiny(tmp_path, cfg, say=lambda s: None)
    for key in ("accuracy", "soft_accuracy", "function_accuracy", "unconstrained", "seconds"):
        assert key in res
    assert 0 <= res["accuracy"] <= res["soft_accuracy"] <= 1  # a right sample has every argument right
    assert res["n_test"] == 6 and json.loads((tmp_path / "result.json").read_text())["n_test"] == 6
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 6
    from pocketlm.intent import load_specs

    specs = load_specs()
    meta = load_intent_meta(tmp_path / "finetune" / "final")  # how `pocketlm intent` will prompt and decode it
    assert meta["doc_style"] == "brief" and meta["candidates"] == 4
    assert all(fn in specs and arg in specs[fn].arguments for fn, arg in meta["copy_args"])
    # constrained decoding never stops on an empty answer: every output starts a call of a candidate
    for line in (tmp_path / "predictions.jsonl").read_text().splitlines():
        out = json.loads(line)["output"]
        assert out.startswith("result0 = "), out


def test_augmenters_keep_copied_values_verbatim():
    """Openers must not lowercase a value at the start of a request ("Hey, maria's number"): the grammar
    only lets the model copy values as written, and a lowercased copy would teach the model otherwise and
    drop the argument from the learned copy arguments."""
    from pocketlm.intent import load_specs, synthesize
    from pocketlm.intent.grammar import learn_copy_args
    from pocketlm.intent.specs import Sample
    from pocketlm.intent.pipeline import augment_phrasing, augment_values

    specs = load_specs()
    s = Sample("Maria's phone number?", [{"id": 0, "name": "get_contact_info",
                                          "arguments": {"name": "Maria", "key": "phone"}}])
    t = Sample("Take a photo", [{"id": 0, "name": "ACTION_IMAGE_CAPTURE", "arguments": {}}])
    out = augment_phrasing([s, t] * 200, fraction=1.0, seed=0)
    assert all("Maria" in o.query for o in out[::2])
    assert any("take a photo" in o.query for o in out[1::2])  # an ordinary verb is lowercased after "Hey, "
    assert all(o.answers == s.answers for o in out[::2])

    train = augment_phrasing(augment_values(synthesize(1500, seed=0), specs, ["alpha", "bravo", "delta"], 0.9, 0),
                             0.5, 0)
    copy_args = learn_copy_args(train)
    for arg in [("get_contact_info", "name"), ("send_message", "body"), ("dial", "phone_number")]:
        assert list(arg) in copy_args


def _decode_and_score(test, specs, copy_args, prefer_gold: bool, seed: int = 0) -> dict:
    """Constrained decoding + parsing + scoring, driven by a model whose logits favour (or, with
    prefer_gold False, disfavour) the piece that continues the gold answer; the rest is noise."""
    import random
    import string

    import torch

    from pocketlm.intent import evaluate, format_answer
    from pocketlm.intent.grammar import CallGrammar, GrammarChooser, PieceIndex
    from pocketlm.intent.prompt import choose_candidates, parse_calls

    pieces = ["<stop>"] + list(string.printable) + ["result", " = ", '="', '", ', "ACTION_", "_"]
    index = PieceIndex(pieces)
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    preds = []
    for s in test:
        gold = format_answer(s.answers)
        cands = choose_candidates(s, specs, k=4, rng=rng)
        chooser = GrammarChooser(CallGrammar(cands, s.query, copy_args), pieces.__getitem__, [0], index=index)
        for _ in range(len(gold) + 64):
            logits = torch.rand(len(pieces), generator=gen)
            rest = gold[len(chooser.text):]
            best = 0 if not rest else max((i for i, p in enumerate(pieces) if i and rest.startswith(p)),
                                          key=lambda i: len(pieces[i]), default=None)
            if best is not None:
                logits[best] = 10.0 if prefer_gold else -10.0
            if chooser(logits) in (None, 0):
                break
        calls, err = parse_calls(chooser.text, specs)
        preds.append({"answers": calls, "error": err, "output": chooser.text})
    return evaluate(test, preds, specs)


def test_a_perfect_model_scores_100_and_a_contrary_one_cannot_pass_the_floor():
    """The decoder, parser and scorer together: a model that always prefers the gold continuation must
    score 100% through the grammar, and one that always avoids it must stay under the 80% floor a real
    fine-tune is held to (benchmarks/intent_smollm2.py): a decoder or scorer that ignores the model can't pass."""
    from pocketlm.intent import load_specs, synthesize
    from pocketlm.intent.grammar import learn_copy_args

    specs = load_specs()
    copy_args = learn_copy_args(synthesize(600, seed=0, split="train"))
    test = synthesize(40, seed=1, split="test")
    perfect = _decode_and_score(test, specs, copy_args, prefer_gold=True)
    assert perfect["accuracy"] == 1.0 and perfect["soft_accuracy"] == 1.0
    contrary = _decode_and_score(test, specs, copy_args, prefer_gold=False)
    assert contrary["accuracy"] < 0.8

"""pocketlm finetune: chat template parity, assistant-only labels, packing, LoRA save/merge/HF parity,
CLI output loadable by transformers, exact resume, recipe errors."""

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from pocketlm.errors import UserError
from pocketlm.intent.sft_data import load_chat_data, write_intent_meta  # registers the DroidCall recipe fields
from pocketlm.train.finetune import load_recipe, recipe_from_dict, run_finetune
from pocketlm.train.lora import apply_lora, merge_adapter, save_adapter
from pocketlm.train.sft import (SFTBatches, collate, encode_chat, encode_prompt, pack_examples, prepare_tokenizer,
                                save_chat_tokenizer, tokenize_conversations)
from pocketlm.train.metrics import read_metrics
from pocketlm.train.trainer import IGNORE_INDEX

WORDS = ("the cat sat on a mat dog ran far away quick brown fox jumps over lazy hello world what is "
         "your name alarm timer call send message").split()


def _conversation(rng: random.Random, multi: bool) -> list[dict]:
    q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
    a = " ".join(reversed(q.split()))
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if multi:
        msgs = ([{"role": "system", "content": "Reverse the words."}] + msgs
                + [{"role": "user", "content": "and " + q}, {"role": "assistant", "content": "again " + a}])
    return msgs


@pytest.fixture(scope="module")
def ft_env(tmp_path_factory):
    """A tokenizer trained in-process, a tiny random base checkpoint with it, a chat JSONL file."""
    from pocketlm.model.checkpoint import save_checkpoint
    from pocketlm.model.decoder import PocketLM
    from pocketlm.model.presets import get_preset
    from pocketlm.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("ft")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(200)]
    tok_dir = train_tokenizer(texts, 400, root / "tok")
    save_checkpoint(PocketLM.from_config(get_preset("tiny"), seed=0), root / "base", tokenizer=str(tok_dir))
    data = root / "chat.jsonl"
    with open(data, "w") as f:
        for i in range(40):
            f.write(json.dumps({"messages": _conversation(rng, multi=i % 3 == 0)}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    from pocketlm.data.tokenizer import load_tokenizer

    return {"root": root, "base": str(root / "base"), "data": str(data),
            "tok": prepare_tokenizer(load_tokenizer(root / "base"))}


def _recipe(env, **kw):
    base = dict(name="t", base=env["base"], data=env["data"], seq_len=96, batch_size=4, micro_batch_size=2,
                max_steps=4, lr=3e-3, save_every=2, log_every=0, seed=1)
    base.update(kw)
    return recipe_from_dict(base)


# ----------------------------------------------------------------------------- template + labels
def test_prompt_equals_transformers_apply_chat_template(ft_env, tmp_path):
    from transformers import AutoTokenizer

    from pocketlm.data.tokenizer import CHAT_TEMPLATE

    save_chat_tokenizer(ft_env["base"], tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    rng = random.Random(3)
    for multi in (False, True):
        msgs = _conversation(rng, multi)
        prompt = msgs[:-1]
        want = hf.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert encode_prompt(ft_env["tok"], prompt) == list(want)
        full = hf.apply_chat_template(msgs, tokenize=True, return_dict=False)
        ids, _ = encode_chat(ft_env["tok"], msgs)
        assert ids.tolist() == list(full)  # training tokens == what inference renders
        # the training sequence starts with exactly the inference prompt of its first assistant turn
        first = hf.apply_chat_template(msgs[:msgs.index(next(m for m in msgs if m["role"] == "assistant"))],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids[:len(first)].tolist() == list(first)
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert hf.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]


def test_loss_mask_covers_exactly_the_assistant_turns(ft_env):
    tok = ft_env["tok"]
    msgs = _conversation(random.Random(5), multi=True)
    ids, mask = encode_chat(tok, msgs)
    # contiguous target runs, one per assistant turn, each = content + end-of-turn token
    runs, cur = [], []
    for i, m in zip(ids.tolist(), mask.tolist()):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    answers = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert [tok.decode(r) for r in runs] == [a + "<|im_end|>" for a in answers]
    prompt_text = tok.decode(ids[~mask])
    for m in msgs:
        if m["role"] != "assistant":
            assert m["content"] in prompt_text
    batch = collate([(ids, mask)], tok.pad_token_id)
    labels = batch["labels"][0]
    assert torch.equal(batch["input_ids"][0], torch.from_numpy(ids[:-1]))
    shifted = torch.where(torch.from_numpy(mask[1:]), torch.from_numpy(ids[1:]), IGNORE_INDEX)
    assert torch.equal(labels, shifted)
    assert int((labels != IGNORE_INDEX).sum()) == int(mask[1:].sum())


def _chatml_assistant_positions(tok, ids: list[int]) -> list[int]:
    """Positions of assistant tokens read off the ChatML structure (not the library's span logic): every
    token after "<|im_start|>assistant\\n" up to and including the turn's <|im_end|>."""
    from pocketlm.data.tokenizer import IM_END, IM_START

    start, end = tok.convert_tokens_to_ids(IM_START), tok.convert_tokens_to_ids(IM_END)
    out, i = [], 0
    while i < len(ids):
        if ids[i] != start:
            i += 1
            continue
        j = i + 1
        while not tok.decode(ids[i + 1:j]).endswith("\n"):
            j += 1
        k = ids.index(end, j)
        if tok.decode(ids[i + 1:j]).strip() == "assistant":
            out += range(j, k + 1)
        i = k + 1
    return out


def test_sft_loss_equals_hand_computed_cross_entropy_over_assistant_tokens(ft_env):
    """The trainer's loss on padded, masked micro-batches (grad accumulation 2) is the mean of -log p over
    exactly the assistant tokens, each conversation scored alone and unpadded."""
    from pocketlm.model.checkpoint import load_checkpoint
    from pocketlm.train.trainer import Schedule, Trainer, TrainerConfig, build_optimizer

    tok = ft_env["tok"]
    rng = random.Random(11)
    convs = [_conversation(rng, multi=i % 2 == 0) for i in range(4)]
    examples = tokenize_conversations(tok, convs, seq_len=512).examples
    assert len({len(ids) for ids, _ in examples}) > 1  # rows of different lengths: the batches are padded
    model = load_checkpoint(ft_env["base"])
    nll, count = 0.0, 0
    with torch.no_grad():
        for conv, (ids, _) in zip(convs, examples):
            ids = ids.tolist()
            targets = _chatml_assistant_positions(tok, ids)
            answers = [m["content"] for m in conv if m["role"] == "assistant"]
            assert tok.decode([ids[p] for p in targets]) == "".join(a + "<|im_end|>" for a in answers)
            logp = torch.nn.functional.log_softmax(model(torch.tensor([ids[:-1]]))[0].double(), dim=-1)
            nll -= sum(float(logp[p - 1, ids[p]]) for p in targets)
            count += len(targets)
    batches = SFTBatches(examples, batch_size=4, micro=2, rank=0, world=1, seed=0, pad_id=tok.pad_token_id)
    trainer = Trainer(model, build_optimizer(model, lr=1e-3), Schedule("constant", lr=1e-3), batches,
                      TrainerConfig(max_steps=1, grad_accum=2), out_dir=None)
    assert trainer.train_step()["loss"] == pytest.approx(nll / count, rel=1e-5)


def test_packing_keeps_conversations_whole_and_targets_intact(ft_env):
    tok = ft_env["tok"]
    rng = random.Random(7)
    examples = tokenize_conversations(tok, [_conversation(rng, i % 2 == 0) for i in range(20)], 512).examples
    seq_len, pad = 256, tok.pad_token_id
    rows = pack_examples(examples, seq_len, pad)
    assert all(len(ids) == seq_len + 1 and len(mask) == seq_len + 1 for ids, mask in rows)
    assert len(rows) < len(examples)
    # walk rows: each row's non-padding prefix is a run of whole examples, in order (greedy fill)
    k = 0
    for ids, mask in rows:
        pos = 0
        while k < len(examples) and pos + len(examples[k][0]) <= len(ids):
            e_ids, e_mask = examples[k]
            assert ids[pos:pos + len(e_ids)].tolist() == e_ids.tolist()
            assert mask[pos:pos + len(e_ids)].tolist() == e_mask.tolist()
            pos, k = pos + len(e_ids), k + 1
        assert pos > 0
        assert not mask[pos:].any() and (ids[pos:] == pad).all()
    assert k == len(examples)
    total = sum(int(m[1:].sum()) for _, m in examples)
    packed = collate(rows, pad)
    # a conversation's first token is never a target, so no label crosses a conversation boundary
    assert int((packed["labels"] != IGNORE_INDEX).sum()) == total


def test_batches_cover_each_epoch_once_and_restore(ft_env):
    rows = [(np.arange(i + 3), np.ones(i + 3, dtype=bool)) for i in range(10)]
    b = SFTBatches(rows, batch_size=5, micro=5, rank=0, world=1, seed=0, pad_id=0)
    assert sorted(b.global_indices(0) + b.global_indices(1)) == list(range(10))
    for _ in range(3):
        next(b)
    state = b.state_dict()
    nxt = next(b)
    b2 = SFTBatches(rows, batch_size=5, micro=5, rank=0, world=1, seed=0, pad_id=0)
    b2.load_state_dict(state)
    assert torch.equal(next(b2)["input_ids"], nxt["input_ids"])


def test_length_grouped_batches_pad_less_and_still_cover_each_epoch(ft_env):
    rng = np.random.default_rng(1)
    rows = [(np.arange(n), np.ones(n, dtype=bool)) for n in rng.integers(100, 400, size=600)]

    def padding(b, steps):
        total = 0
        for _ in range(steps * b.accum):
            ids = next(b)["input_ids"]
            total += int((ids == -1).sum())
        return total

    plain = SFTBatches(rows, batch_size=16, micro=8, rank=0, world=1, seed=0, pad_id=-1)
    grouped = SFTBatches(rows, batch_size=16, micro=8, rank=0, world=1, seed=0, pad_id=-1, group_by_length=True)
    # every row once per epoch (600 rows = 37.5 batches: epoch boundaries inside a batch are fine)
    seen = [i for s in range(75) for i in grouped.global_indices(s)]
    assert sorted(seen[:600]) == sorted(seen[600:1200]) == list(range(600))
    assert padding(grouped, 30) < 0.3 * padding(plain, 30)
    # the order is still shuffled: micro-batch lengths are not sorted along the epoch
    firsts = [len(rows[grouped.global_indices(s)[0]][0]) for s in range(30)]
    assert firsts != sorted(firsts)
    # resuming needs the same setting
    grouped2 = SFTBatches(rows, batch_size=16, micro=8, rank=0, world=1, seed=0, pad_id=-1)
    with pytest.raises(UserError, match="group_by_length"):
        grouped2.load_state_dict(grouped.state_dict())


def test_padding_to_a_multiple_bounds_the_shapes_and_leaves_the_loss_unchanged(ft_env):
    """pad_to_multiple_of: widths become multiples, the extra positions carry no target, and (right padding,
    causal attention) the loss is the unpadded one."""
    from pocketlm.model.checkpoint import load_checkpoint
    from pocketlm.train.trainer import causal_lm_loss

    tok = ft_env["tok"]
    rng = random.Random(3)
    examples = tokenize_conversations(tok, [_conversation(rng, multi=False) for _ in range(40)], 512).examples
    widths = {collate(examples[i:i + 2], tok.pad_token_id, 16)["input_ids"].shape[1] for i in range(0, 40, 2)}
    assert widths and all(w % 16 == 0 for w in widths)
    assert len(widths) < len({collate(examples[i:i + 2], tok.pad_token_id)["input_ids"].shape[1]
                              for i in range(0, 40, 2)})
    plain, padded = collate(examples[:3], tok.pad_token_id), collate(examples[:3], tok.pad_token_id, 64)
    extra = padded["labels"][:, plain["labels"].shape[1]:]
    assert extra.numel() and bool((extra == IGNORE_INDEX).all())
    model = load_checkpoint(ft_env["base"])
    with torch.no_grad():
        losses = [float(causal_lm_loss(model, b)) for b in (plain, padded)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    batches = SFTBatches(examples, batch_size=4, micro=2, rank=0, world=1, seed=0, pad_id=tok.pad_token_id,
                         pad_to_multiple_of=32)
    assert all(next(batches)["input_ids"].shape[1] % 32 == 0 for _ in range(6))


def test_load_chat_data_skips_and_counts_bad_records(ft_env, tmp_path):
    convs, skipped = load_chat_data(ft_env["data"])
    assert len(convs) == 40
    assert skipped["malformed_jsonl"] == 1 and skipped["no_assistant_turn"] == 1
    share = tmp_path / "sharegpt.jsonl"
    share.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                                   {"from": "gpt", "value": "hello"}]}) + "\n")
    convs, _ = load_chat_data(str(share))
    assert convs == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    # DroidCall records become code_short conversations; unknown functions are skipped and counted
    droid = tmp_path / "droidcall.jsonl"
    droid.write_text(json.dumps({"query": "wake me at 7", "answers": [
        {"id": 0, "name": "ACTION_SET_ALARM", "arguments": {"EXTRA_HOUR": 7, "EXTRA_MINUTES": 0}}]}) + "\n"
        + json.dumps({"query": "fly", "answers": [{"id": 0, "name": "teleport", "arguments": {}}]}) + "\n")
    convs, skipped = load_chat_data(str(droid), candidates=3, doc_style="brief")
    assert len(convs) == 1 and skipped["unknown_function"] == 1
    system, user, answer = convs[0]
    assert user["content"].endswith("Now my query is: wake me at 7") and user["content"].count("=" * 50) == 2
    assert answer == {"role": "assistant", "content": "result0 = ACTION_SET_ALARM(EXTRA_HOUR=7, EXTRA_MINUTES=0)"}


# ----------------------------------------------------------------------------- LoRA
def test_lora_adapter_merge_and_transformers_peft_parity(ft_env, tmp_path, run_cli):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from pocketlm.model.checkpoint import load_checkpoint

    torch.manual_seed(0)
    peft_model = apply_lora(load_checkpoint(ft_env["base"]), r=4, alpha=8, targets="q,k,gate,up,down")
    with torch.no_grad():  # lora_B starts at zero; make the adapter do something
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        want = peft_model(x)
    adapter = save_adapter(peft_model, tmp_path / "adapter", base=ft_env["base"], tokenizer=ft_env["base"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 4
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "gate_proj", "up_proj", "down_proj"}
    keys = set(load_file(str(adapter / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys

    merged_dir = merge_adapter(ft_env["base"], adapter, tmp_path / "merged")
    merged = load_checkpoint(merged_dir)
    with torch.no_grad():
        got = merged(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(load_checkpoint(ft_env["base"])(x), want, atol=1e-3)  # the adapter matters

    hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ft_env["base"], dtype=torch.float32),
                                   str(adapter))
    with torch.no_grad():
        hf_logits = hf(input_ids=x).logits
    torch.testing.assert_close(hf_logits, got, rtol=1e-4, atol=1e-4)

    code, out, err = run_cli("finetune", "merge", str(adapter), "--out", tmp_path / "merged_cli")
    assert code == 0, err
    torch.testing.assert_close(load_checkpoint(tmp_path / "merged_cli")(x), got, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_loss_on_target_logits_only_equals_the_full_loss_and_gradients(ft_env):
    """loss_logits: targets runs the LM head only where labels != -100: same loss and gradients."""
    from pocketlm.model.checkpoint import load_checkpoint
    from pocketlm.train.trainer import causal_lm_loss, target_logits_loss

    tok = ft_env["tok"]
    rng = random.Random(5)
    examples = tokenize_conversations(tok, [_conversation(rng, multi=i % 2 == 0) for i in range(4)], 512).examples
    batch = {k: torch.as_tensor(v) for k, v in collate(examples, tok.pad_token_id).items()}
    assert 0 < int((batch["labels"] != IGNORE_INDEX).sum()) < batch["labels"].numel() // 2
    losses, grads = [], []
    for loss_fn in (causal_lm_loss, target_logits_loss):
        model = load_checkpoint(ft_env["base"])
        loss = loss_fn(model, batch)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_loss_logits_flag_reaches_the_trainer(ft_env, tmp_path, run_cli):
    """--loss-logits targets trains to the same losses as the default (all positions), up to rounding."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: ll\nbase: {ft_env['base']}\ndata: {ft_env['data']}\nseq_len: 96\n"
                      "batch_size: 4\nmax_steps: 2\nlr: 3e-3\nlog_every: 1\nsave_every: 0\n")
    runs = {}
    for mode in ("all", "targets"):
        code, _, err = run_cli("finetune", recipe, "--out", tmp_path / mode, "--loss-logits", mode)
        assert code == 0, err
        assert f"loss_logits: {mode}" in (tmp_path / mode / "recipe.yaml").read_text()
        runs[mode] = [r["loss"] for r in read_metrics(tmp_path / mode / "metrics.jsonl")]
    assert runs["targets"] == pytest.approx(runs["all"], rel=1e-4)
    code, _, err = run_cli("finetune", recipe, "--loss-logits", "some")
    assert code == 2 and "loss_logits" in err


def test_finetune_cli_writes_checkpoint_transformers_loads(ft_env, tmp_path, run_cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pocketlm.model.checkpoint import load_checkpoint

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: cli\nbase: {ft_env['base']}\ndata: {ft_env['data']}\nseq_len: 96\n"
                      "batch_size: 4\nmax_steps: 3\nlr: 3e-3\nval_fraction: 0.1\nlog_every: 1\n")
    out = tmp_path / "run"
    code, stdout, err = run_cli("finetune", recipe, "--out", out, "--packing", "true")
    assert code == 0, err
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3] and "eval_loss" in recs[-1]
    hf = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32)
    ours = load_checkpoint(out / "final")
    assert not torch.equal(ours.model.embed_tokens.weight, load_checkpoint(ft_env["base"]).model.embed_tokens.weight)
    tok = AutoTokenizer.from_pretrained(out / "final")
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "hello cat"}],
                                                add_generation_prompt=True, tokenize=True, return_dict=False)])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(ids), rtol=1e-4, atol=1e-4)


def _interrupted_then_resumed(env, out, **kw):
    """Run until the step-3 log line, die there (after checkpoint 2, before checkpoint 4), rerun."""
    class Killed(Exception):
        pass

    def die_at_step3(line):
        if line.startswith("step 3/"):
            raise Killed

    recipe = _recipe(env, log_every=1, **kw)
    with pytest.raises(Killed):
        run_finetune(recipe, out, print_fn=die_at_step3)
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 3  # step 3 was lost work
    run_finetune(recipe, out, print_fn=lambda s: None)
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl")]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_killed_run_resumes_to_identical_losses(ft_env, tmp_path, method):
    kw = {"method": method, "lr": 3e-2 if method == "lora" else 3e-3}
    straight = run_finetune(_recipe(ft_env, **kw), tmp_path / "a", print_fn=lambda s: None)
    want = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    assert len(want) == 4 and straight["last_loss"] < straight["first_loss"]
    got = _interrupted_then_resumed(ft_env, tmp_path / "b", **kw)
    assert got == want  # bit-identical on CPU
    if method == "lora":
        assert (tmp_path / "b" / "adapter" / "adapter_model.safetensors").is_file()
        assert (tmp_path / "b" / "final" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- errors
def test_bad_recipe_fields_exit_2(ft_env, tmp_path, run_cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {ft_env['base']}\ndata: {ft_env['data']}\nlearning_rate: 0.1\n")
    code, _, err = run_cli("finetune", bad)
    assert code == 2 and "learning_rate" in err and err.count("\n") == 1
    good = tmp_path / "good.yaml"
    good.write_text(f"base: {ft_env['base']}\ndata: {ft_env['data']}\nseq_len: 96\n")
    for args, word in ((["--method", "qlora"], "method"), (["--lora-targets", "q,zz"], "zz"),
                       (["--bogus", "1"], "bogus"), (["--lr", "fast"], "lr")):
        code, _, err = run_cli("finetune", good, *args)
        assert code == 2 and word in err, (args, err)
    code, _, err = run_cli("finetune", good, "--data", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl" in err


def test_builtin_recipes_parse():
    for name in ("intent-tiny", "instruct-tiny", "phonelm-1.5b-call", "intent-smollm2"):
        r = load_recipe(name)
        assert r.base and r.data
    smol = load_recipe("intent-smollm2")
    assert (smol.base, smol.method, smol.precision, smol.loss_logits, smol.doc_style) == \
        ("smollm2-135m-instruct", "lora", "bf16", "targets", "brief")
    call = load_recipe("phonelm-1.5b-call")
    assert (call.method, call.lora_r, call.lora_alpha, call.lora_dropout, call.lr, call.epochs) == \
        ("lora", 8, 16.0, 0.0, 1.41e-5, 24.0)


def test_entity_swap_augmentation_keeps_query_and_answer_consistent():
    from pocketlm.intent import load_specs, synthesize
    from pocketlm.intent.pipeline import augment_values

    specs = load_specs()
    orig = synthesize(60, seed=3)
    aug = augment_values(orig, specs, ["apple", "river", "stone"], 1.0, seed=0)
    changed = 0
    for o, a in zip(orig, aug):
        assert [c["name"] for c in o.answers] == [c["name"] for c in a.answers]
        for oc, ac in zip(o.answers, a.answers):
            for k, v in ac["arguments"].items():
                if isinstance(v, str) and v != oc["arguments"][k]:
                    changed += 1
                    assert v in a.query and oc["arguments"][k] not in v  # swapped in query and answer
                elif isinstance(v, str) and v.lower() in ("email", "phone", "wifi", "image/*"):
                    assert v == oc["arguments"][k]  # documented enum values stay
    assert changed > 20


def test_droidcall_finetune_records_prompt_style_and_copy_args(tmp_path):
    from pocketlm.intent import synthesize
    from pocketlm.intent.grammar import load_intent_meta
    from pocketlm.intent.specs import write_droidcall

    data = tmp_path / "train.jsonl"
    write_droidcall(synthesize(300, seed=0, split="train"), data)
    recipe = recipe_from_dict({"name": "t", "base": "tiny", "data": str(data), "doc_style": "brief", "candidates": 3})
    write_intent_meta(recipe, tmp_path)
    meta = load_intent_meta(tmp_path)
    assert meta["doc_style"] == "brief" and meta["candidates"] == 3
    assert ["get_contact_info", "name"] in meta["copy_args"] and ["open_settings", "setting_type"] not in meta["copy_args"]
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    assert write_intent_meta(recipe_from_dict({"name": "t", "base": "tiny", "data": str(chat)}), tmp_path / "x") is None


# ----------------------------------------------------------------------------- recipe contract
# The --dry-run JSON of `pocketlm finetune` (users script against it): every key, nothing more.
FINETUNE_RECIPE_KEYS = {
    "name", "description", "base", "tokenizer", "data", "data_split", "data_config", "messages_field", "val_data",
    "val_fraction", "max_samples", "synth_samples", "synth_multi_fraction", "candidates", "doc_style", "seq_len",
    "packing", "group_by_length", "method", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "merge", "epochs",
    "max_steps", "batch_size", "micro_batch_size", "lr", "min_lr", "schedule", "warmup_steps", "weight_decay",
    "beta1", "beta2", "eps", "grad_clip", "precision", "model_dtype", "save_dtype", "compile", "parallel", "device",
    "eval_every", "loss_logits", "qat", "qat_start", "pad_to_multiple_of", "save_every", "keep_last", "log_every",
    "tensorboard", "seed"}


def test_dry_run_json_keys_and_defaults_are_the_documented_ones(run_cli, tmp_path):
    code, out, err = run_cli("finetune", "instruct-tiny", "--dry-run", "--out", tmp_path / "o", "--seed", "3")
    assert code == 0, err
    got = json.loads(out)
    assert set(got) == {"out", "recipe"} and set(got["recipe"]) == FINETUNE_RECIPE_KEYS
    assert got["recipe"]["seed"] == 3 and got["out"] == str(tmp_path / "o")
    # fields the built-in recipe leaves out keep fine-tuning's own defaults, not pre-training's
    r = got["recipe"]
    assert (r["beta2"], r["keep_last"], r["candidates"], r["doc_style"]) == (0.999, 2, 4, "full")
    from pocketlm.train.finetune import FinetuneRecipe
    from pocketlm.train.pretrain import Recipe

    pre, ft = Recipe(), FinetuneRecipe()
    assert (pre.seq_len, pre.beta2, pre.weight_decay, pre.eval_every, pre.data) == (256, 0.95, 0.1, 100, "builtin")
    assert (ft.seq_len, ft.beta2, ft.weight_decay, ft.eval_every, ft.data) == (2048, 0.999, 0.0, 0, "")


def test_generic_finetune_does_not_import_intent():
    code = ("import sys, pocketlm.train.cli, pocketlm.train.finetune\n"
            "bad = sorted(m for m in sys.modules if m.startswith('pocketlm.intent'))\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_droidcall_data_comes_from_the_intent_extension():
    from pocketlm.intent.sft_data import SYNTH_SOURCE, IntentFinetuneRecipe
    from pocketlm.train.finetune import FinetuneRecipe, recipe_type

    assert recipe_type() is IntentFinetuneRecipe  # importing pocketlm.intent registered it
    with pytest.raises(UserError, match="'candidates'"):
        FinetuneRecipe.from_dict({"base": "tiny", "data": "x.jsonl", "candidates": 3})
    with pytest.raises(UserError, match="'doc_style'"):
        IntentFinetuneRecipe.from_dict({"base": "tiny", "data": SYNTH_SOURCE, "doc_style": "terse"})
    r = IntentFinetuneRecipe.from_dict({"base": "tiny", "data": SYNTH_SOURCE, "synth_samples": 6, "candidates": 2})
    convs, skipped = r.load_conversations(r.data)
    assert len(convs) + sum(skipped.values()) == 6 and len(convs) >= 5
    assert all(c[-1]["role"] == "assistant" and c[-1]["content"].startswith("result0 = ") for c in convs)


def test_droidcall_finetune_writes_intent_json_into_final_checkpoint(ft_env, tmp_path):
    from pocketlm.intent import synthesize
    from pocketlm.intent.grammar import load_intent_meta
    from pocketlm.intent.specs import write_droidcall

    data = tmp_path / "droid.jsonl"
    write_droidcall(synthesize(8, seed=0, split="train"), data)
    recipe = _recipe(ft_env, data=str(data), doc_style="brief", candidates=1, seq_len=500, max_steps=1,
                     save_every=0)
    summary = run_finetune(recipe, tmp_path / "run", print_fn=lambda s: None)
    meta = load_intent_meta(summary["final"])
    assert (meta["doc_style"], meta["candidates"]) == ("brief", 1)


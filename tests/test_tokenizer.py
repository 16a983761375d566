"""Tokenizer: byte-level BPE training, HF format, digits, special tokens, the one chat template."""

import json

import pytest

from pocketlm.cli import main
from pocketlm.errors import UserError
from pocketlm.data.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, load_tokenizer, render_chat, train_tokenizer

TEXTS = [
    "The river Ithka flows through Elfenton and reaches the sea in 1770.",
    "def add(a, b):\n    return a + b\n\nprint(add(12, 345))\n",
    "Café, naïve, 日本語, emoji 🚀 and tabs\tare all bytes in the end.",
    "Solve 3x + 5 = 20. Subtract 5: 3x = 15. Divide by 3: x = 5.",
] * 50


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(TEXTS, 400, tmp_path_factory.mktemp("tok") / "tokenizer")


def test_round_trip_and_special_tokens(tok_dir):
    tok = load_tokenizer(tok_dir)
    for text in TEXTS[:4] + ["  leading spaces, trailing  ", "\n\n", "ü" * 7]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    # ids 0-2 are the special tokens, each a single id; eos doubles as bos and pad
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(t) == i
        assert tok.encode(t, add_special_tokens=False) == [i]
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == tok.pad_token_id == tok.bos_token_id == 0
    # no BOS/EOS added implicitly: data prepare adds EOS itself
    assert tok.encode("hello", add_special_tokens=True) == tok.encode("hello", add_special_tokens=False)


def test_digits_are_split_individually(tok_dir):
    tok = load_tokenizer(tok_dir)
    # "345" and "1770" are frequent in training, yet never merge
    for number in ["345", "1770", "20240517"]:
        pieces = tok.convert_ids_to_tokens(tok.encode(f"x{number}y", add_special_tokens=False))
        assert [p for p in pieces if any(c.isdigit() for c in p)] == list(number)


def test_space_tokens_keep_a_copied_word_the_same_token(tmp_path):
    """With space_tokens a word inside a quoted value is the same id as in the sentence it was copied from
    (GPT-2 style gives " Golden" in the request but "Golden" after the quote)."""
    texts = ['How do I get to Golden Gate Bridge? query="Golden Gate Bridge"'] * 50 + TEXTS
    plain = load_tokenizer(train_tokenizer(texts, 400, tmp_path / "plain"))
    spaced = load_tokenizer(train_tokenizer(texts, 400, tmp_path / "spaced", space_tokens=True))
    request, value = "How do I get to Golden Gate Bridge?", 'query="Golden Gate Bridge"'

    def contains(tok, text, word):
        ids, sub = tok.encode(text, add_special_tokens=False), tok.encode(word, add_special_tokens=False)
        return any(ids[i:i + len(sub)] == sub for i in range(len(ids)))

    assert contains(spaced, request, "Golden") and contains(spaced, value, "Golden")
    assert contains(plain, value, "Golden") and not contains(plain, request, "Golden")  # " Golden" there
    for text in TEXTS[:4] + ["  leading spaces, trailing  ", "\n\n", 'a="b c"']:
        ids = spaced.encode(text, add_special_tokens=False)
        assert spaced.decode(ids) == text
        # no token but pure whitespace has a space in it
        assert all(not any(c.isspace() for c in p) or p.isspace() for p in (spaced.decode([i]) for i in ids))


def test_unsplit_digits_merge_number_runs_the_same_everywhere(tmp_path):
    """split_digits=False: frequent numbers become single tokens, and a number copied from a sentence
    into a quoted value is the same ids (with one token per digit, "2682" is four ids)."""
    texts = ["call 389 202 2682 at 10:51, alarm 10 51", 'dial(phone="389 202 2682")'] * 50 + TEXTS
    tok = load_tokenizer(train_tokenizer(texts, 400, tmp_path / "runs", space_tokens=True, split_digits=False))
    assert [tok.decode([i]) for i in tok.encode("2682", add_special_tokens=False)] == ["2682"]
    number = tok.encode("389 202 2682", add_special_tokens=False)
    for text in ["call 389 202 2682 now", 'phone="389 202 2682"']:
        ids = tok.encode(text, add_special_tokens=False)
        assert any(ids[i:i + len(number)] == number for i in range(len(ids))), text
        assert tok.decode(ids) == text
    split = load_tokenizer(train_tokenizer(texts, 400, tmp_path / "split", space_tokens=True))
    assert len(split.encode("2682", add_special_tokens=False)) == 4


def test_chat_template_through_auto_tokenizer(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    got = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert got == render_chat(msgs, add_generation_prompt=True)
    assert got == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                   "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                   "<|im_start|>assistant\n")
    sys_msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    got = tok.apply_chat_template(sys_msgs, tokenize=False)
    assert got == render_chat(sys_msgs) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
    ids = tok.apply_chat_template(sys_msgs, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == 1 and ids.count(2) == 2  # markers are single special ids


def test_train_from_files_and_dirs_skips_bad_data(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("plain text about towns and rivers\n" * 20)
    (d / "b.jsonl").write_text("\n".join(json.dumps({"text": f"record {i} of the set"}) for i in range(30))
                               + "\n{not json\n")
    (d / "c.txt").write_bytes(b"\x00\x01binary")
    (d / "d.txt").write_bytes(b"bad \xff utf8")
    out = train_tokenizer([d], 300, tmp_path / "tok")
    tok = load_tokenizer(out)
    assert 259 < len(tok) <= 300
    assert tok.decode(tok.encode("record 7 of the set", add_special_tokens=False)) == "record 7 of the set"


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer(TEXTS, 100, tmp_path / "t")
    with pytest.raises(UserError, match="not found"):
        train_tokenizer([tmp_path / "missing.txt"], 300, tmp_path / "t")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.txt").write_text("")
    with pytest.raises(UserError, match="no training text"):
        train_tokenizer([tmp_path / "empty"], 300, tmp_path / "t")
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(UserError, match="no tokenizer"):
        load_tokenizer(tmp_path / "empty")
    assert not (tmp_path / "t").exists()  # nothing half-written


def test_cli_train(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(" ".join(TEXTS[:8]))
    assert main(["tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(tmp_path / "tok"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["special_tokens"] == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert main(["tokenizer", "train", "--input", str(tmp_path / "nope*.txt"), "--vocab-size", "300",
                 "--out", str(tmp_path / "tok2")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(tmp_path / "tok3"), "--space-tokens"]) == 0
    pieces = load_tokenizer(tmp_path / "tok3").tokenize("The river flows")
    assert all(p == "Ġ" or "Ġ" not in p for p in pieces) and "Ġ" in pieces
    (tmp_path / "n.txt").write_text("room 2682 and 2682 again, 2682 " * 40)
    for flag, expect in (([], ["Ġ", "2", "6", "8", "2"]), (["--no-split-digits"], ["Ġ2682"])):
        out = tmp_path / f"tok-digits{len(flag)}"
        assert main(["tokenizer", "train", "--input", str(tmp_path / "n.txt"), "--vocab-size", "300",
                     "--out", str(out)] + flag) == 0
        assert load_tokenizer(out).tokenize(" 2682") == expect


def test_cli_train_text_field_and_min_frequency(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))

    def train(out, *flags):
        code = main(["tokenizer", "train", "--input", str(tmp_path / "a.jsonl"), "--vocab-size", "320",
                     "--out", str(tmp_path / out), "--json", *flags])
        captured = capsys.readouterr()
        return code, (json.loads(captured.out) if code == 0 else captured.err)

    # --text-field: the records' text is under "body"; the default field finds nothing
    code, err = train("nofield")
    assert code == 2 and "no training text" in err and not (tmp_path / "nofield").exists()
    code, info = train("tok", "--text-field", "body")
    assert code == 0 and set(info) == {"out", "vocab_size", "eos_token", "eos_id", "special_tokens"}
    assert info["vocab_size"] == 320 and info["eos_id"] == 0 and info["out"] == str(tmp_path / "tok")
    # --min-frequency: a pair must occur this often to merge; above every pair's count, no merges at all
    code, rare = train("rare", "--text-field", "body", "--min-frequency", "100000")
    assert code == 0 and rare["vocab_size"] == 256 + len(SPECIAL_TOKENS)
    text = "The river Ithka flows"
    assert len(load_tokenizer(tmp_path / "rare").tokenize(text)) == len(text)  # bytes only
    assert len(load_tokenizer(tmp_path / "tok").tokenize(text)) < len(text)
    code, mid = train("mid", "--text-field", "body", "--min-frequency", "60")
    assert code == 0 and rare["vocab_size"] < mid["vocab_size"] < info["vocab_size"]

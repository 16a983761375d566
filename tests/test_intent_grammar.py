"""Schema-constrained decoding: the call grammar, copy arguments learned from data, and decoding through it."""

import pytest

from pocketlm.intent import load_specs, parse_calls, synthesize
from pocketlm.intent.grammar import (COMPLETE, INVALID, PREFIX, CallGrammar, GrammarChooser, PieceIndex,
                                     learn_copy_args, load_intent_meta, save_intent_meta)

SPECS = load_specs()


def grammar(query="Call Tom about the plan", copy=(("get_contact_info", "name"),)):
    names = ["web_search", "dial", "get_contact_info", "ACTION_SET_ALARM"]
    return CallGrammar([SPECS[n] for n in names], query, copy_args=copy)


@pytest.mark.parametrize("text, state", [
    ("", PREFIX),
    ("result0 = di", PREFIX),
    ("result0 = dia(", INVALID),                       # not a candidate function
    ("result0 = send_email(", INVALID),                # a real function, but not offered in the prompt
    ("result1 = dial(", INVALID),                      # calls are numbered from 0
    ('result0 = dial(number="1")', INVALID),           # dial has no argument `number`
    ('result0 = get_contact_info(name="To', PREFIX),   # copying "Tom" from the request
    ('result0 = get_contact_info(name="Tim', INVALID),  # "Tim" is not in the request
    ('result0 = get_contact_info(name="tom', INVALID),  # copied as written
    ('result0 = get_contact_info(name="Tom about', PREFIX),
    ('result0 = get_contact_info(name="Tom about the plan")', COMPLETE),
    ('result0 = get_contact_info(name="om', INVALID),  # a span starts at a word of the request
    ('result0 = get_contact_info(name="To")', INVALID),  # ... and ends at one
    ('result0 = dial(phone_number="5",', INVALID),    # dial has no argument left for a ", "
    ('result0 = web_search(query="a\rb', INVALID),    # a line break cannot be inside a string
    ("result0 = dial(phone_number=r", INVALID),       # the first call has no earlier result
    ('result0 = get_contact_info(name="Tom")\nresult1 = dial(phone_number=result', PREFIX),
    ('result0 = get_contact_info(name="Tom")\nresult1 = dial(phone_number=result1', INVALID),  # only earlier
    ('result0 = get_contact_info(name="Tom")\nresult1 = dial(phone_number=result00', INVALID),
    ("result0 = dial()\nresult1 = dial(phone_number=r", INVALID),  # dial returns nothing to refer to
    ('result0 = get_contact_info(name="Tom")\nresult1 = ACTION_SET_ALARM(EXTRA_HOUR=r', INVALID),  # str → int
    ('result0 = get_contact_info(name="Tom")\nresult1 = ACTION_SET_ALARM(EXTRA_DAYS=r', INVALID),  # str → list
    ('result0 = get_contact_info(name="Tom")\nresult1 = ACTION_SET_ALARM(EXTRA_DAYS=[result0])', COMPLETE),
    ('result0 = dial()\nresult1 = get_contact_info(name="Tom")\nresult2 = dial(phone_number=result0', INVALID),
    ('result0 = dial()\nresult1 = get_contact_info(name="Tom")\nresult2 = dial(phone_number=result1)', COMPLETE),
    ('result0 = get_contact_info(name="the plan")', COMPLETE),
    ('result0 = get_contact_info(name="Tom", key="phone")', COMPLETE),
    ('result0 = get_contact_info(name="Tom", key="phone")\nresult1 = dial(phone_number=result0)', COMPLETE),
    ("result0 = dial(phone_number=result0)", INVALID),  # a call can only use earlier results
    ("result0 = ACTION_SET_ALARM(EXTRA_HOUR=7, EXTRA_MINUTES=3", PREFIX),
    ('result0 = ACTION_SET_ALARM(EXTRA_HOUR="7"', INVALID),  # int argument
    ("result0 = ACTION_SET_ALARM(EXTRA_HOUR=7.5", INVALID),
    ('result0 = ACTION_SET_ALARM(EXTRA_DAYS=["Monday", "Tu', PREFIX),
    ('result0 = ACTION_SET_ALARM(EXTRA_DAYS="Monday"', INVALID),  # a list argument
    ("result0 = ACTION_SET_ALARM(EXTRA_VIBRATE=Tr", PREFIX),
    ("result0 = ACTION_SET_ALARM(EXTRA_VIBRATE=Yes", INVALID),
    ("result0 = ACTION_SET_ALARM(EXTRA_VIBRATE=True, EXTRA_VIBRATE=False)", INVALID),  # argument twice
    ("result0 = ACTION_SET_ALARM()", COMPLETE),
    ("result0 = ACTION_SET_ALARM()\n", PREFIX),
    ("result0 = ACTION_SET_ALARM() ", INVALID),
])
def test_grammar_states(text, state):
    assert grammar().check(text) == state


def test_every_gold_answer_of_the_synthetic_sets_is_grammatical():
    from pocketlm.intent import format_answer

    train = synthesize(300, seed=0, split="train")
    copy = learn_copy_args(train)
    for s in train + synthesize(100, seed=1, split="test"):
        g = CallGrammar([SPECS[c["name"]] for c in s.answers], s.query, copy)
        assert g.check(format_answer(s.answers)) == COMPLETE, (s.query, format_answer(s.answers))


def test_copy_args_are_learned_from_the_data():
    copy = {tuple(x) for x in learn_copy_args(synthesize(600, seed=0, split="train"))}
    assert ("get_contact_info", "name") in copy and ("web_search", "query") in copy
    # said differently than written: "Wi-Fi" -> "wifi", "March 3 from 5 pm" -> ISO 8601
    assert ("open_settings", "setting_type") not in copy
    assert ("ACTION_INSERT_EVENT", "EXTRA_EVENT_BEGIN_TIME") not in copy


def test_intent_meta_round_trip(tmp_path):
    save_intent_meta(tmp_path, doc_style="brief", candidates=4, copy_args=[["dial", "phone_number"]])
    assert load_intent_meta(tmp_path) == {"doc_style": "brief", "candidates": 4,
                                          "copy_args": [["dial", "phone_number"]]}
    assert load_intent_meta(tmp_path / "missing") == {}


def test_chooser_takes_the_best_valid_token_and_stops_only_when_complete():
    import torch

    pieces = ["result0 = dial(", "result0 = nope(", 'phone_number="', "555", "666", '")', "<stop>"]
    g = CallGrammar([SPECS["dial"]], "call 555 now", copy_args=[("dial", "phone_number")])
    chooser = GrammarChooser(g, pieces.__getitem__, stop_ids=[6])
    picks = []
    for favourite in [1, 2, 4, 6, 6]:  # the model's top token each step; the chooser must override it
        logits = torch.zeros(len(pieces))
        logits[favourite] = 10.0
        logits[6] += 5.0  # the stop token is always the runner-up
        picks.append(chooser(logits))
    # nope( is not a candidate, 666 is not in the request, stop only after the call is complete
    assert picks == [0, 2, 3, 5, 6]
    assert chooser.text == 'result0 = dial(phone_number="555")'


def test_stop_is_refused_until_a_whole_call_is_written():
    import torch

    g = grammar()
    assert g.check("") == PREFIX and g.check("result0 = dial(") == PREFIX  # neither may end the answer
    pieces = ["<stop>", "result0 = ", "dial(", ")"]
    chooser = GrammarChooser(g, pieces.__getitem__, stop_ids=[0])
    logits = torch.tensor([10.0, 3.0, 2.0, 1.0])  # the model wants to stop at once, every step
    assert [chooser(logits) for _ in range(4)] == [1, 2, 3, 0]
    assert parse_calls(chooser.text, SPECS) == ([{"id": 0, "name": "dial", "arguments": {}}], None)


@pytest.mark.parametrize("seed", range(12))
def test_a_lost_model_still_ends_with_a_parsable_non_empty_call(seed):
    """A model that always wants to stop and otherwise writes random characters: the chooser must not stop
    on an empty or partial answer, and once it stops the answer parses into calls of the candidates."""
    import string

    import torch

    pieces = ["<stop>"] + list(string.printable) + ["result0 = ", "result1 = "]
    query = "Call Tom at 555 1234 about the plan"
    g = grammar(query)
    chooser = GrammarChooser(g, pieces.__getitem__, stop_ids=[0])
    # the first-character index must choose exactly what checking every token in logit order chooses
    indexed = GrammarChooser(grammar(query), pieces.__getitem__, stop_ids=[0], index=PieceIndex(pieces),
                             fast_tries=2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(5000):
        logits = torch.rand(len(pieces), generator=gen)
        logits[0] = 2.0
        tok = chooser(logits)
        assert tok is not None  # some token always keeps a valid answer valid
        assert indexed(logits) == tok
        if tok == 0:
            break
    else:
        pytest.fail(f"no complete call after 5000 tokens: {chooser.text[:200]!r}")
    calls, err = parse_calls(chooser.text, SPECS)
    assert err is None and calls, chooser.text
    assert g.check(chooser.text) == COMPLETE
    assert all(c["name"] in g.functions for c in calls)


@pytest.mark.slow  # builds a tiny checkpoint
def test_constrained_decoding_always_parses_even_with_random_weights(tiny_ckpt):
    from pocketlm.intent.infer import load_runner, predict

    runner = load_runner(str(tiny_ckpt), "torch")
    test = synthesize(6, seed=3, split="test")
    preds = predict(runner, test, SPECS, k=4, max_new_tokens=48, doc_style="brief", progress=False)
    parsed = [p for p in preds if p["error"] is None]
    # a random model rarely finishes a call within 48 tokens, but it can never stop before writing one:
    # every output is a non-empty start of a call, and whatever stopped on its own parses
    for p in preds:
        assert p["output"].startswith("result0 = "), p["output"]
    for p in parsed:
        assert p["answers"] and all(c["name"] in SPECS for c in p["answers"])
    free = predict(runner, test, SPECS, k=4, max_new_tokens=16, doc_style="brief", progress=False, constrain=False)
    assert not any(p["output"].startswith("result0 = ") for p in free)  # the constraint did the work


@pytest.mark.slow  # tiny checkpoint → F32 GGUF → llama.cpp
def test_llamacpp_constrained_decoding_matches_torch(tiny_ckpt, tmp_path):
    pytest.importorskip("llama_cpp")
    from pocketlm.runtime.gguf import export_gguf
    from pocketlm.intent.infer import load_runner, predict

    gguf = export_gguf(str(tiny_ckpt), tmp_path / "m.gguf", quant="f32")
    test = synthesize(4, seed=5, split="test")
    kw = dict(k=4, max_new_tokens=24, doc_style="brief", progress=False)
    ours = predict(load_runner(str(tiny_ckpt), "torch"), test, SPECS, **kw)
    llama = predict(load_runner(str(gguf), "llamacpp", str(tiny_ckpt)), test, SPECS, **kw)
    # same weights, same grammar, greedy: the same text token for token (F32 logits agree closely)
    assert [p["output"] for p in llama] == [p["output"] for p in ours]
    assert all(p["output"].startswith("result0 = ") for p in ours)


def test_a_copy_never_ends_on_punctuation():
    g = CallGrammar([SPECS["get_contact_info"]], "Modify contact Olivia, phone 555", copy_args=[("get_contact_info", "name")])
    assert g.check('result0 = get_contact_info(name="Olivia,")') == INVALID
    assert g.check('result0 = get_contact_info(name="Olivia")') == COMPLETE


def test_an_escape_cannot_smuggle_text_into_a_copy():
    # `"Gold\` used to end the check early (seen in a tiny model's output: query="Gold\)
    g = CallGrammar([SPECS["web_search"]], "How do I get to Golden Gate Bridge?", copy_args=[("web_search", "query")])
    assert g.check('result0 = web_search(query="Gold\\') == INVALID
    assert g.check('result0 = web_search(query="Golden\\n') == INVALID
    # a request that has quotes in it can be copied with them escaped
    q = CallGrammar([SPECS["web_search"]], 'Search "deep learning" books', copy_args=[("web_search", "query")])
    assert q.check('result0 = web_search(query="\\"deep learning\\" books")') == COMPLETE
    assert q.check('result0 = web_search(query="\\"deep') == PREFIX
    assert q.check('result0 = web_search(query="\\"dep') == INVALID


def test_documented_value_sets_constrain_strings_and_dict_keys():
    from pocketlm.intent.specs import documented_values

    assert documented_values('Default is "baidu". Possible values are: "baidu", "google"') == \
        {"choices": ("baidu", "google")}
    assert documented_values("Keys (available key: 'email', 'phone'), values ...") == {"keys": ("email", "phone")}
    assert documented_values('The days, e.g. ["Monday", "Tuesday"].') == {}
    assert SPECS["open_settings"].arguments["setting_type"].choices[:2] == ("general", "wireless")
    g = CallGrammar([SPECS["open_settings"], SPECS["ACTION_INSERT_CONTACT"]], "Add Tom, phone 555 1234")
    assert g.check('result0 = open_settings(setting_type="wi') == PREFIX
    assert g.check('result0 = open_settings(setting_type="wifi")') == COMPLETE
    assert g.check('result0 = open_settings(setting_type="Wi-Fi")') == INVALID
    assert g.check('result0 = ACTION_INSERT_CONTACT(contact_info={"phone": "555 1234"})') == COMPLETE
    assert g.check('result0 = ACTION_INSERT_CONTACT(contact_info={"555": "phone"})') == INVALID


@pytest.mark.slow  # ~200 random decodes
def test_random_logits_always_end_in_a_parsable_call_for_200_requests():
    """Issue 15 item 6: whatever the logits, constrained decoding ends in calls that parse, of offered
    functions, with result references only to earlier calls whose result the argument takes."""
    import random
    import string

    import torch

    from pocketlm.intent.prompt import choose_candidates
    from pocketlm.intent.grammar import _kind

    train = synthesize(400, seed=0, split="train")
    copy = learn_copy_args(train)
    pieces = ["<stop>"] + list(string.printable) + ["result", "result0", "result1", " = ", '("', '")', '", ',
                                                    "=[", "=True", "None", "\\\\", '\\"', "\\u00"]
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    index = PieceIndex(pieces)
    refs = 0
    for sample in synthesize(200, seed=1, split="test"):
        g = CallGrammar(choose_candidates(sample, SPECS, k=4, rng=rng), sample.query, copy_args=copy)
        chooser = GrammarChooser(g, pieces.__getitem__, stop_ids=[0], index=index, fast_tries=8)
        for _ in range(4000):
            logits = torch.rand(len(pieces), generator=gen)
            logits[0] = 0.9  # a stop is often the model's favourite, but only allowed after a whole answer
            if chooser(logits) == 0:
                break
        else:
            pytest.fail(f"{sample.query!r}: no complete answer after 4000 tokens: {chooser.text[:300]!r}")
        calls, err = parse_calls(chooser.text, SPECS)
        assert err is None and calls, chooser.text
        assert all(c["name"] in g.functions for c in calls)
        for c in calls:
            for arg, value in c["arguments"].items():
                if isinstance(value, str) and value.startswith("#"):  # parse_calls writes resultK as "#K"
                    refs += 1
                    source = calls[int(value[1:])]
                    assert source["id"] < c["id"]
                    ret = SPECS[source["name"]].returns
                    assert ret and _kind(ret["type"])[0] == _kind(SPECS[c["name"]].arguments[arg].type)[0]
    assert refs > 0  # the references were exercised, not just avoided

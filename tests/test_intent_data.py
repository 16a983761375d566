"""Specs, code_short prompt, call parser, synthetic data and the adb mapping."""

import json
import random
import shlex
import subprocess
import sys

import pytest

from pocketlm.intent import (SYSTEM_PROMPT, Sample, build_prompt, choose_candidates, format_answer, load_droidcall,
                             load_specs, parse_calls, retrieve, synthesize, to_adb, to_sft_records)
from pocketlm.intent.android import INTENTS, parse_duration, to_adb_argv
from pocketlm.intent.synth import template_texts

SPECS = load_specs()


def test_specs_have_24_functions_with_types_defaults_and_match_types():
    assert len(SPECS) == 24
    alarm = SPECS["ACTION_SET_ALARM"].arguments
    assert alarm["EXTRA_HOUR"].type == "int" and alarm["EXTRA_HOUR"].required
    assert alarm["EXTRA_SKIP_UI"].default is True and not alarm["EXTRA_SKIP_UI"].required
    assert alarm["EXTRA_MESSAGE"].match_type == "semantic" and alarm["EXTRA_HOUR"].match_type == "strict"
    assert SPECS["send_message"].arguments["body"].match_type == "semantic"
    assert all(name in INTENTS for name in SPECS)  # every function maps to an Android intent


def test_load_droidcall_records_malformed_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"query": "call 1", "answers": [{"id": 0, "name": "dial", "arguments": {"phone_number": "1"}}]}\n'
                 "{oops\n\n"
                 '{"query": "x", "answers": "nope"}\n'
                 '{"query": "y"}\n'
                 '[1, 2]\n')
    samples = load_droidcall(p)
    assert [s.error is None for s in samples] == [True, False, False, False, False]
    assert samples[0].answers[0]["arguments"] == {"phone_number": "1"}
    assert "invalid JSON" in samples[1].error and samples[1].line == 2
    assert "not a list" in samples[2].error and "no 'answers'" in samples[3].error


def test_prompt_is_code_short_with_candidate_docs():
    cands = [SPECS["dial"], SPECS["ACTION_SET_ALARM"]]
    msgs = build_prompt("call mom", cands)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == SYSTEM_PROMPT == "You are an expert in composing functions."
    user = msgs[1]["content"]
    assert user.endswith("Now my query is: call mom")
    assert "Name:\n    dial" in user and "Name:\n    ACTION_SET_ALARM" in user
    assert "    EXTRA_HOUR (int): The hour of the alarm in 24-hour format." in user
    assert "=" * 50 in user
    brief = build_prompt("call mom", cands, doc_style="brief")[1]["content"]
    assert len(brief) < len(user) / 3 and "dial(phone_number: str)" in brief


def test_choose_candidates_gold_plus_shuffled_distractors():
    s = Sample("q", [{"id": 0, "name": "get_contact_info", "arguments": {}}, {"id": 1, "name": "dial", "arguments": {}}])
    names = [[c.name for c in choose_candidates(s, SPECS, k=4, rng=random.Random(i))] for i in range(20)]
    assert all(len(n) == 4 == len(set(n)) and {"get_contact_info", "dial"} <= set(n) for n in names)
    assert len({tuple(n) for n in names}) > 5  # distractors and order vary
    assert names[0] == [c.name for c in choose_candidates(s, SPECS, k=4, rng=random.Random(0))]


def test_format_and_parse_round_trip_with_nesting():
    calls = [{"id": 0, "name": "get_contact_info", "arguments": {"name": "Tom \"T\" O'Neil", "key": "email"}},
             {"id": 1, "name": "send_email", "arguments": {"to": ["#0"], "subject": "Hi", "body": "line1\nline2",
                                                            "cc": None}},
             {"id": 2, "name": "ACTION_SET_ALARM", "arguments": {"EXTRA_HOUR": 8, "EXTRA_MINUTES": 0,
                                                                  "EXTRA_VIBRATE": True, "EXTRA_DAYS": ["Monday"]}},
             {"id": 3, "name": "ACTION_INSERT_CONTACT", "arguments": {"contact_info": {"name": "A", "phone": "1"}}}]
    text = format_answer(calls)
    assert text.splitlines()[2] == ('result2 = ACTION_SET_ALARM(EXTRA_HOUR=8, EXTRA_MINUTES=0, EXTRA_VIBRATE=True, '
                                    'EXTRA_DAYS=["Monday"])')
    assert "to=[result0]" in text
    parsed, err = parse_calls(text)
    assert err is None and parsed == calls


@pytest.mark.parametrize("text, expected", [
    ("result0 = dial(phone_number='(212) 555-1212')", [("dial", {"phone_number": "(212) 555-1212"})]),
    ("```python\nresult0 = dial(phone_number=\"1\")\n```", [("dial", {"phone_number": "1"})]),
    ("<tool_call>result0 = ACTION_SHOW_ALARMS()</tool_call>", [("ACTION_SHOW_ALARMS", {})]),
    ('result0 = dial("555")', [("dial", {"phone_number": "555"})]),  # positional → spec order
    ('result0 = ACTION_GET_CONTENT(mime_type="image/*", allow_multiple=true)',
     [("ACTION_GET_CONTENT", {"mime_type": "image/*", "allow_multiple": True})]),
    ('result0 = dial(phone_number="1")\nresult1 = web_search(query="x" garbage\nresult2 = ACTION_SHOW_ALARMS()',
     [("dial", {"phone_number": "1"}), ("ACTION_SHOW_ALARMS", {})]),  # broken line skipped
    ('result0 = send_email(to=["a@x.com"],\n  subject="s", body="b")',
     [("send_email", {"to": ["a@x.com"], "subject": "s", "body": "b"})]),  # spans lines
])
def test_parse_calls_edge_cases(text, expected):
    calls, err = parse_calls(text, SPECS)
    assert err is None
    assert [(c["name"], c["arguments"]) for c in calls] == expected


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("Sure! I will set the alarm.", "no `resultN"),
    ("result0 = dial(phone_number=__import__('os').system('x'))", "unparsable"),  # never evaluated
    ("result0 = dial(phone_number=x + 1)", "unparsable"),
    ("result0 = unknown_fn(1, 2)", "unparsable"),  # positional args to an unknown function
])
def test_parse_calls_failures_give_reasons(text, reason):
    calls, err = parse_calls(text, SPECS)
    assert calls == [] and reason in err


def test_synth_is_deterministic_and_valid():
    a, b = synthesize(300, seed=3), synthesize(300, seed=3)
    assert [s.to_json() for s in a] == [s.to_json() for s in b]
    assert [s.to_json() for s in a] != [s.to_json() for s in synthesize(300, seed=4)]
    names = {c["name"] for s in a for c in s.answers}
    assert len(names) == 24  # every function appears
    assert any(len(s.answers) > 1 for s in a)
    assert any(c["arguments"].get(k) == "#0" or c["arguments"].get(k) == ["#0"]
               for s in a for c in s.answers for k in c["arguments"])
    for s in a:  # every argument exists in the spec, every required one the query can give is present
        for c in s.answers:
            assert set(c["arguments"]) <= set(SPECS[c["name"]].arguments)
        parsed, err = parse_calls(format_answer(s.answers), SPECS)
        assert err is None and parsed == s.answers


def test_synth_train_and_test_phrasings_are_disjoint():
    train_t, test_t = template_texts("train"), template_texts("test")
    assert train_t and test_t and not (train_t & test_t)
    train, test = synthesize(1000, seed=0), synthesize(200, seed=0, split="test")
    assert not ({s.query for s in train} & {s.query for s in test})
    # free-text values come from disjoint pools: no event title or contact name is shared
    def values(samples, fn, arg):
        return {c["arguments"].get(arg) for s in samples for c in s.answers if c["name"] == fn} - {None}
    assert not (values(train, "ACTION_INSERT_EVENT", "TITLE") & values(test, "ACTION_INSERT_EVENT", "TITLE"))
    assert not (values(train, "get_contact_info", "name") & values(test, "get_contact_info", "name"))


def test_compositional_training_phrasings_never_produce_a_test_phrasing():
    from pocketlm.intent.synth import is_test_phrasing

    train, test = synthesize(3000, seed=0), synthesize(300, seed=0, split="test")
    kind = lambda s: s.answers[0]["name"] if len(s.answers) == 1 else None  # noqa: E731
    # every test request is recognised by its own templates' patterns...
    singles = [s for s in test if kind(s)]
    assert singles and all(is_test_phrasing(kind(s), s.query) for s in singles)
    # ...and no training request (fixed template or composed wording) matches one
    assert not [s.query for s in train if kind(s) and is_test_phrasing(kind(s), s.query)]
    assert len({s.query for s in train}) > 0.7 * len(train)  # composed wordings make most requests unique
    for s in train:  # composed requests are valid calls too
        parsed, err = parse_calls(format_answer(s.answers), SPECS)
        assert err is None and parsed == s.answers


def test_sft_records_are_chat_messages():
    samples = synthesize(20, seed=1) + [Sample("bad", [], error="invalid JSON")]
    recs = to_sft_records(samples, SPECS, seed=0)
    assert len(recs) == 20
    for r, s in zip(recs, samples):
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert r["messages"][1]["content"].endswith("Now my query is: " + s.query)
        assert r["messages"][2]["content"] == format_answer(s.answers)
        for c in s.answers:  # gold functions are always among the candidates
            assert f"Name:\n    {c['name']}\n" in r["messages"][1]["content"]
    assert to_sft_records(samples, SPECS, seed=0) == recs


def test_retriever_finds_the_right_function():
    for query, name in [("wake me up at 7:30 tomorrow", "ACTION_SET_ALARM"), ("set a timer for 10 minutes", "ACTION_SET_TIMER"),
                        ("call 555 1234", "dial"), ("email bob about lunch", "send_email"),
                        ("turn on bluetooth", "open_settings"), ("where is the nearest pharmacy", "search_location"),
                        ("take a photo", "ACTION_IMAGE_CAPTURE")]:
        assert name in [s.name for s in retrieve(query, SPECS, k=4)], query


def test_retriever_recall_on_synthetic_test_set():
    test = synthesize(200, seed=0, split="test")
    hits = sum(all(c["name"] in {s.name for s in retrieve(t.query, SPECS, k=4)} for c in t.answers) for t in test)
    assert hits / len(test) >= 0.7


def test_adb_mapping_uses_real_android_actions_and_extras():
    alarm = to_adb({"name": "ACTION_SET_ALARM", "arguments": {"EXTRA_HOUR": 7, "EXTRA_MINUTES": 30,
                                                              "EXTRA_DAYS": ["Monday", "Friday"]}}, SPECS["ACTION_SET_ALARM"])
    assert alarm.startswith("adb shell am start -a android.intent.action.SET_ALARM")
    assert "--ei android.intent.extra.alarm.HOUR 7 --ei android.intent.extra.alarm.MINUTES 30" in alarm
    assert "--eial android.intent.extra.alarm.DAYS 2,6" in alarm  # Calendar.MONDAY=2, FRIDAY=6
    assert "--ez android.intent.extra.alarm.SKIP_UI true" in alarm  # the function's default
    timer = to_adb({"name": "ACTION_SET_TIMER", "arguments": {"duration": "1 hours 30 minutes"}})
    assert "-a android.intent.action.SET_TIMER --ei android.intent.extra.alarm.LENGTH 5400" in timer
    assert to_adb({"name": "dial", "arguments": {"phone_number": "555 1234"}}) == \
        "adb shell am start -a android.intent.action.DIAL -d tel:5551234"
    web = to_adb({"name": "web_search", "arguments": {"query": "cheap flights"}})
    assert "android.intent.action.WEB_SEARCH --es query 'cheap flights'" in web
    sms = to_adb({"name": "send_message", "arguments": {"phone_number": "123", "body": "hi"}})
    assert "android.intent.action.SENDTO -d smsto:123 --es sms_body hi" in sms
    mail = to_adb({"name": "send_email", "arguments": {"to": ["a@x.com", "b@x.com"], "subject": "S", "body": "B"}})
    assert "SENDTO -d mailto: --esa android.intent.extra.EMAIL a@x.com,b@x.com" in mail
    assert "android.intent.extra.SUBJECT S" in mail and "android.intent.extra.TEXT B" in mail
    assert "-a android.settings.BLUETOOTH_SETTINGS" in to_adb({"name": "open_settings", "arguments": {"setting_type": "bluetooth"}})
    assert "-a android.settings.SETTINGS" in to_adb({"name": "open_settings", "arguments": {}}, SPECS["open_settings"])
    assert "android.media.action.IMAGE_CAPTURE" in to_adb({"name": "ACTION_IMAGE_CAPTURE", "arguments": {}})
    event = to_adb({"name": "ACTION_INSERT_EVENT", "arguments": {"TITLE": "Sync", "DESCRIPTION": "d",
                                                                 "EXTRA_EVENT_BEGIN_TIME": "2025-01-02T10:00:00+00:00"}})
    assert "android.intent.action.INSERT -d content://com.android.calendar/events --es title Sync" in event
    assert "--el beginTime 1735812000000" in event
    assert "vnd.android.cursor.dir/phone_v2" in to_adb({"name": "ACTION_PICK", "arguments": {"data_type": "PHONE"}})
    assert parse_duration("10 minutes") == 600 and parse_duration("soon") is None


def test_adb_nested_call_is_a_commented_step():
    text = to_adb({"name": "dial", "arguments": {"phone_number": "#0"}})
    lines = text.splitlines()
    assert all(line.startswith("#") for line in lines)
    assert "<result0>" in lines[-1] and "android.intent.action.DIAL" in lines[-1]


def test_adb_quoting_survives_host_and_device_shells():
    call = {"name": "send_message", "arguments": {"phone_number": "1", "body": "I'm \"late\" $HOME `x` & done"}}
    argv, _ = to_adb_argv(call)
    cmd = to_adb(call)
    assert cmd.startswith("adb shell ")
    # host shell → adb joins its args with spaces → device sh splits them again
    echo = [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:]))"]
    device = subprocess.run(["bash", "-c", shlex.join(echo) + " " + cmd[len("adb shell "):]],
                            capture_output=True, text=True, check=True).stdout.rstrip("\n")
    dump = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]
    out = subprocess.run(["sh", "-c", shlex.join(dump) + " " + device], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == argv

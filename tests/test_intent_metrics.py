"""DroidCall metrics on hand-made predictions (lexical matcher unless stated)."""

import pytest

from pocketlm.intent import LexicalMatcher, Sample, evaluate, load_specs, score_sample, values_match

SPECS = load_specs()
LEX = LexicalMatcher()


def call(fn, i=0, **arguments):
    return {"id": i, "name": fn, "arguments": arguments}


ALARM = Sample("wake me at 7:30", [call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=30)])


def test_exact_prediction_scores_one():
    score, reasons = score_sample(ALARM, [call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=30)], SPECS, LEX)
    assert score == 1.0 and reasons == []


def test_partial_arguments_score_share_over_all_spec_arguments():
    # ACTION_SET_ALARM has 7 spec arguments; one wrong minute → 6/7
    score, reasons = score_sample(ALARM, [call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=0)], SPECS, LEX)
    assert score == pytest.approx(6 / 7)
    assert any("EXTRA_MINUTES" in r for r in reasons)


def test_wrong_or_missing_function_counts_all_its_arguments_wrong():
    gold = Sample("q", [call("dial", phone_number="123"),
                        call("ACTION_SET_ALARM", 1, EXTRA_HOUR=7, EXTRA_MINUTES=30)])
    score, reasons = score_sample(gold, [call("dial", phone_number="123"), call("ACTION_SET_TIMER", 1, duration="5 minutes")],
                                  SPECS, LEX)
    assert score == pytest.approx(1 / 8)  # dial 1/1 right, alarm 0/7
    assert any("missing call ACTION_SET_ALARM" in r for r in reasons)


def test_extra_predicted_calls_are_ignored():
    extra = [call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=30), call("dial", 1, phone_number="1")]
    assert score_sample(ALARM, extra, SPECS, LEX)[0] == 1.0


def test_omitted_optional_arguments_compare_to_defaults():
    # gold omits EXTRA_SKIP_UI (default True): predicting True explicitly is right, False is wrong
    ok = call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=30, EXTRA_SKIP_UI=True, EXTRA_MESSAGE="")
    bad = call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=30, EXTRA_SKIP_UI=False)
    assert score_sample(ALARM, [ok], SPECS, LEX)[0] == 1.0
    assert score_sample(ALARM, [bad], SPECS, LEX)[0] == pytest.approx(6 / 7)
    # and the other way round: gold gives the default, prediction omits it
    gold = Sample("q", [call("web_search", query="cats", engine="baidu")])
    assert score_sample(gold, [call("web_search", query="cats")], SPECS, LEX)[0] == 1.0


def test_required_argument_absent_from_gold_but_predicted_is_wrong():
    # the checker's rule: send_message.subject is required; gold omits it, the prediction invents one
    gold = Sample("q", [call("send_message", phone_number="1", body="hi")])
    score, reasons = score_sample(gold, [call("send_message", phone_number="1", body="hi", subject="x")], SPECS, LEX)
    assert score == pytest.approx(3 / 4) and any("subject" in r for r in reasons)


def test_types_never_match_across_types():
    assert not values_match(1, 1.0)
    assert not values_match(True, 1)
    assert not values_match("7", 7)
    assert values_match(None, "None") and values_match(None, None)
    gold = Sample("q", [call("ACTION_GET_CONTENT", mime_type="image/*", allow_multiple=True)])
    assert score_sample(gold, [call("ACTION_GET_CONTENT", mime_type="image/*", allow_multiple=1)], SPECS, LEX)[0] == 0.5


def test_lists_are_order_insensitive_multisets_and_dicts_key_by_key():
    assert values_match(["a@x.com", "b@x.com"], ["B@x.com", "a@x.com"])
    assert not values_match(["a", "a", "b"], ["a", "b", "b"])  # the checker's set test passed this
    assert not values_match(["a"], ["a", "b"])
    assert values_match({"name": "Tom", "phone": "1"}, {"phone": "1", "name": " tom "})
    assert not values_match({"name": "Tom"}, {"name": "Tom", "phone": "1"})


def test_strict_strings_ignore_case_and_whitespace_semantic_use_matcher():
    assert values_match("Wifi", " wifi ", "strict")
    assert not values_match("Team meeting", "Team sync meeting", "strict", LEX)
    # free text: lexical similarity above threshold matches, unrelated text does not
    assert values_match("Take medicine", "take the medicine", "semantic", LEX)
    assert not values_match("Gym", "Dentist appointment", "semantic", LEX)
    gold = Sample("q", [call("ACTION_INSERT_EVENT", TITLE="Team meeting", DESCRIPTION="Discuss the roadmap")])
    pred = [call("ACTION_INSERT_EVENT", TITLE="team meeting", DESCRIPTION="discuss the road map")]
    assert score_sample(gold, pred, SPECS, LEX)[0] == 1.0  # DESCRIPTION is semantic
    strict_pred = [call("ACTION_INSERT_EVENT", TITLE="Team meeting", DESCRIPTION="Discuss the roadmap",
                        EVENT_LOCATION="Room  1")]
    gold_loc = Sample("q", [call("ACTION_INSERT_EVENT", TITLE="Team meeting", DESCRIPTION="Discuss the roadmap",
                                 EVENT_LOCATION="Room 1")])
    assert score_sample(gold_loc, strict_pred, SPECS, LEX)[0] == pytest.approx(6 / 7)  # location is strict


def test_nested_references_compare_as_references():
    gold = Sample("call Tom", [call("get_contact_info", 0, name="Tom", key="phone"),
                               call("dial", 1, phone_number="#0")])
    right = [call("get_contact_info", 0, name="Tom", key="phone"), call("dial", 1, phone_number="#0")]
    assert score_sample(gold, right, SPECS, LEX)[0] == 1.0
    # numbering from 1 is fine: references are renamed through the call matching
    shifted = [call("get_contact_info", 1, name="Tom", key="phone"), call("dial", 2, phone_number="#1")]
    assert score_sample(gold, shifted, SPECS, LEX)[0] == 1.0
    # a literal number where the gold has a reference is wrong, and vice versa
    literal = [call("get_contact_info", 0, name="Tom", key="phone"), call("dial", 1, phone_number="555")]
    assert score_sample(gold, literal, SPECS, LEX)[0] == pytest.approx(2 / 3)
    dangling = [call("get_contact_info", 0, name="Tom", key="phone"), call("dial", 1, phone_number="#7")]
    assert score_sample(gold, dangling, SPECS, LEX)[0] == pytest.approx(2 / 3)


def test_duplicate_function_names_are_matched_in_order():
    gold = Sample("two alarms", [call("ACTION_SET_ALARM", 0, EXTRA_HOUR=7, EXTRA_MINUTES=0),
                                 call("ACTION_SET_ALARM", 1, EXTRA_HOUR=8, EXTRA_MINUTES=0)])
    one = [call("ACTION_SET_ALARM", 0, EXTRA_HOUR=8, EXTRA_MINUTES=0)]
    # the checker kept only the last prediction per name and scored 7 then 8 against it; we need both
    score, _ = score_sample(gold, one, SPECS, LEX)
    assert score == pytest.approx(6 / 14)
    both = [call("ACTION_SET_ALARM", 0, EXTRA_HOUR=7, EXTRA_MINUTES=0), call("ACTION_SET_ALARM", 1, EXTRA_HOUR=8, EXTRA_MINUTES=0)]
    assert score_sample(gold, both, SPECS, LEX)[0] == 1.0


def test_zero_argument_calls_must_be_predicted():
    gold = Sample("photo", [call("ACTION_IMAGE_CAPTURE")])
    assert score_sample(gold, [call("ACTION_IMAGE_CAPTURE")], SPECS, LEX)[0] == 1.0
    assert score_sample(gold, [], SPECS, LEX)[0] == 0.0  # the checker scored this 1.0


def test_unknown_functions_are_scored_wrong_not_crashing():
    gold = Sample("q", [call("NOT_A_FUNCTION", x=1, y=2)])
    score, reasons = score_sample(gold, [call("NOT_A_FUNCTION", x=1, y=2)], SPECS, LEX)
    assert score == 0.0 and any("not in the function specs" in r for r in reasons)
    score, reasons = score_sample(ALARM, [call("MADE_UP")], SPECS, LEX)
    assert score == 0.0 and any("unknown function MADE_UP" in r for r in reasons)


def test_evaluate_accuracy_and_soft_accuracy():
    gold = [ALARM, Sample("q", [call("dial", phone_number="1")]), Sample("q", [call("ACTION_SHOW_ALARMS")])]
    preds = [
        [call("ACTION_SET_ALARM", EXTRA_HOUR=7, EXTRA_MINUTES=31)],   # 6/7
        "result0 = dial(phone_number=\"1\")",                         # raw model text, right
        "I cannot help with that",                                     # unparsable → 0 with a reason
    ]
    res = evaluate(gold, preds, SPECS, LEX)
    assert res["n"] == 3 and res["matcher"] == "lexical"
    assert res["accuracy"] == pytest.approx(1 / 3)
    assert res["soft_accuracy"] == pytest.approx((6 / 7 + 1 + 0) / 3)
    assert res["bad_lines"] == 1 and "no `resultN" in res["bad_predictions"][0]
    # fewer predictions than gold: the missing ones score 0
    res = evaluate(gold, preds[:1], SPECS, LEX)
    assert res["missing_predictions"] == 2 and res["soft_accuracy"] == pytest.approx(6 / 7 / 3)


@pytest.mark.slow
def test_embedding_matcher_when_installed():
    from pocketlm.intent.metrics import find_embedding_model, get_matcher

    if find_embedding_model() is None:
        m = get_matcher("auto", quiet=True)
        assert m.name == "lexical"
        pytest.skip("no local embedding model installed")
    m = get_matcher("embedding")
    assert m.name.startswith("embedding:")
    assert m("Discuss the roadmap", "Talk about the roadmap")   # paraphrase: lexically far apart
    assert not LEX("Discuss the roadmap", "Talk about the roadmap")
    assert not m("Gym", "Dentist appointment")

"""Synthetic DroidCall-format data from the function specs, so the pipeline runs without the hub.

Every function has a slot generator (argument values + how they are said) and a list of phrasing
templates; multi-call requests combine two functions, either nested (the second call uses the
first one's result through "#0", e.g. look up Tom's number, then dial it) or side by side.

Train and test never share a template: every 4th template of each list (index % 4 == 3) is a test
template, the rest are train templates, plus the train-only phrasings of TRAIN_ONLY / MULTI_TRAIN_ONLY
(the test split is the same with or without them), plus, for half of the training requests, compositional
wordings from `pocketlm.intent.phrasings` (a lead and modifiers in random order); a generated wording that
a test template could have produced is dropped (`test_template_patterns`). Free-text values (names, labels, titles, topics, file
names...) come from disjoint train/test pools the same way, so a test query is new in wording and
content; numbers, times, setting names and MIME types are shared (their surface forms are few).

The value pools and templates are data in `synth_tables`; this module holds the generators that fill them.
"""

from __future__ import annotations

import functools
import random
import re
import string
from typing import Any, Callable

from pocketlm.intent import synth_tables
from pocketlm.intent.phrasings import JOINERS, NESTED_FRAMES, PARALLEL, compose, finish, frame_template
from pocketlm.intent.specs import Sample
from pocketlm.intent.synth_tables import (CREATE_MIMES, DAYS, DOMAINS, KEYS, MIMES, MULTI_TEXTS,
                                          MULTI_TRAIN_ONLY, PICK_KINDS, SETTINGS, T, TEMPLATE_TEXTS,
                                          TRAIN_ONLY)


def _split(items: list, split: str) -> list:
    """Disjoint train/test parts of a list: every 4th item is test."""
    part = [x for i, x in enumerate(items) if (i % 4 == 3) == (split == "test")]
    return part or items


class _Pools:
    def __init__(self, split: str):
        self.split = split
        for attr in ("NAMES", "ALARM_LABELS", "TIMER_LABELS", "EVENT_TITLES", "EVENT_DESCS", "LOCATIONS",
                     "EMAIL_SUBJECTS", "BODIES", "SEARCH_TOPICS", "PLACES", "FILE_NAMES", "COMPANIES"):
            setattr(self, attr.lower(), _split(getattr(synth_tables, attr), split))


# ----------------------------------------------------------------------------- value renderers

def _phone(rng: random.Random) -> str:
    d = "".join(rng.choice(string.digits) for _ in range(10))
    return rng.choice([d, f"{d[:3]}-{d[3:6]}-{d[6:]}", f"+1{d}", f"{d[:3]} {d[3:6]} {d[6:]}"])


def _email(rng: random.Random, name: str) -> str:
    user = re.sub(r"[^a-z]", ".", name.lower()).strip(".")
    return f"{user}{rng.choice(['', '', str(rng.randint(1, 99))])}@{rng.choice(DOMAINS)}"


def _time(rng: random.Random) -> tuple[str, int, int]:
    h, m = rng.randint(0, 23), rng.choice([0, 0, 15, 30, 45, rng.randint(0, 59)])
    h12, ampm = (h % 12 or 12), ("am" if h < 12 else "pm")
    forms = [f"{h12}:{m:02d} {ampm}", f"{h:02d}:{m:02d}", f"{h12}:{m:02d} {ampm.upper()}"]
    if m == 0:
        forms += [f"{h12} {ampm}", f"{h12} o'clock {'in the morning' if h < 12 else 'in the evening'}"]
    return rng.choice(forms), h, m


def _duration(rng: random.Random) -> tuple[str, str]:
    h, m, s = rng.choice([0, 0, 0, 1, 2]), rng.choice([0, 1, 2, 5, 10, 15, 20, 25, 30, 45]), rng.choice([0, 0, 0, 30, 15])
    if h == m == s == 0:
        m = 5
    parts = [(h, "hours"), (m, "minutes"), (s, "seconds")]
    value = " ".join(f"{n} {u}" for n, u in parts if n)
    said = " and ".join(f"{n} {u[:-1] if n == 1 else u}" for n, u in parts if n)
    return said, value


def _days(rng: random.Random) -> tuple[str, list[str]]:
    pick = rng.random()
    if pick < 0.3:
        return "on weekdays", DAYS[:5]
    if pick < 0.45:
        return "on weekends", DAYS[5:]
    days = sorted(rng.sample(DAYS, rng.choice([1, 1, 2, 3])), key=DAYS.index)
    return "every " + (days[0] if len(days) == 1 else ", ".join(days[:-1]) + " and " + days[-1]), days


def _iso(rng: random.Random) -> tuple[str, str, str]:
    """(spoken date-time, begin ISO, end ISO one or two hours later)."""
    month, day, hour = rng.randint(1, 12), rng.randint(1, 28), rng.randint(8, 19)
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"]
    length = rng.choice([1, 2])
    said = f"{months[month - 1]} {day} from {hour % 12 or 12} {'am' if hour < 12 else 'pm'} " \
           f"to {(hour + length) % 12 or 12} {'am' if hour + length < 12 else 'pm'}"
    return said, f"2025-{month:02d}-{day:02d}T{hour:02d}:00:00", f"2025-{month:02d}-{day:02d}T{hour + length:02d}:00:00"


# ----------------------------------------------------------------------------- single-call generators
# Each generator returns slots: {slot: (surface text, {arg: value})}. A template uses some slots
# ("{time}") and may fix extra arguments; the call gets the arguments of the slots it uses.

Slots = dict[str, tuple[str, dict]]


def _g_alarm(rng, p: _Pools) -> Slots:
    said, h, m = _time(rng)
    days_said, days = _days(rng)
    return {"time": (said, {"EXTRA_HOUR": h, "EXTRA_MINUTES": m}),
            "label": (rng.choice(p.alarm_labels), {}),
            "days": (days_said, {"EXTRA_DAYS": days})}


def _g_timer(rng, p) -> Slots:
    said, value = _duration(rng)
    return {"duration": (said, {"duration": value}), "label": (rng.choice(p.timer_labels), {})}


def _g_event(rng, p) -> Slots:
    said, begin, end = _iso(rng)
    i = rng.randrange(len(p.event_titles))
    return {"title": (p.event_titles[i], {}), "desc": (p.event_descs[i % len(p.event_descs)], {}),
            "loc": (rng.choice(p.locations), {}), "when": (said, {"EXTRA_EVENT_BEGIN_TIME": begin,
                                                                 "EXTRA_EVENT_END_TIME": end}),
            "invitee": ("", {})}


def _g_none(rng, p) -> Slots:
    return {}


def _g_pick(rng, p) -> Slots:
    kind, said = rng.choice(PICK_KINDS)
    return {"kind": (said, {"data_type": kind})}


def _g_contact_info(rng, p) -> Slots:
    key, said = rng.choice(KEYS)
    return {"name": (rng.choice(p.names), {}), "key": (said, {"key": key})}


def _g_contact_uri(rng, p) -> Slots:
    key, said = rng.choice(KEYS)
    uri = f"content://com.android.contacts/contacts/lookup/{rng.randint(100, 9999)}"
    return {"uri": (uri, {"contact_uri": uri}), "key": (said, {"key": key})}


def _contact_info(rng, p) -> tuple[str, dict]:
    name = rng.choice(p.names)
    info: dict[str, Any] = {"name": name}
    bits = [name]
    if rng.random() < 0.8:
        info["phone"] = _phone(rng)
        bits.append(f"phone {info['phone']}")
    if rng.random() < 0.5:
        info["email"] = _email(rng, name)
        bits.append(f"email {info['email']}")
    if rng.random() < 0.3:
        info["company"] = rng.choice(p.companies)
        bits.append(f"company {info['company']}")
    return ", ".join(bits), info


def _g_insert_contact(rng, p) -> Slots:
    said, info = _contact_info(rng, p)
    return {"info": (said, {"contact_info": info})}


def _g_edit_contact(rng, p) -> Slots:
    uri = f"content://com.android.contacts/contacts/{rng.randint(1, 999)}"
    field, said = rng.choice([("phone", "phone number"), ("email", "email"), ("company", "company")])
    value = {"phone": _phone(rng), "email": _email(rng, rng.choice(p.names)),
             "company": rng.choice(p.companies)}[field]
    return {"uri": (uri, {"contact_uri": uri}), "field": (said, {}), "value": (value, {"contact_info": {field: value}})}


def _g_view_contact(rng, p) -> Slots:
    uri = f"content://com.android.contacts/contacts/{rng.randint(1, 999)}"
    return {"uri": (uri, {"contact_uri": uri})}


def _g_email(rng, p) -> Slots:
    names = rng.sample(p.names, 2)
    to = [_email(rng, names[0])]
    cc = [_email(rng, names[1])]
    return {"to": (to[0], {"to": to}), "cc": (cc[0], {"cc": cc}), "subject": (rng.choice(p.email_subjects), {}),
            "body": (rng.choice(p.bodies), {})}


def _g_message(rng, p) -> Slots:
    num = _phone(rng)
    return {"number": (num, {"phone_number": num}), "body": (rng.choice(p.bodies), {})}


def _g_dial(rng, p) -> Slots:
    num = _phone(rng)
    return {"number": (num, {"phone_number": num})}


def _g_get_content(rng, p) -> Slots:
    mime, said = rng.choice(MIMES)
    return {"kind": (said, {"mime_type": mime})}


def _g_open_doc(rng, p) -> Slots:
    (m1, s1), (m2, s2) = rng.sample([x for x in MIMES if x[0] != "*/*"], 2)
    if m1 == m2:
        return {"kind": (s1, {"mime_types": [m1]}), "kind2": (s1, {"mime_types": [m1]})}
    return {"kind": (s1, {"mime_types": [m1]}), "kind2": (f"{s1} or {s2}", {"mime_types": [m1, m2]})}


def _g_create_doc(rng, p) -> Slots:
    mime, said = rng.choice(CREATE_MIMES)
    return {"kind": (said, {"mime_type": mime}), "fname": (rng.choice(p.file_names), {})}


def _g_location(rng, p) -> Slots:
    place = rng.choice(p.places)
    return {"place": (place, {"query": place})}


def _g_web(rng, p) -> Slots:
    q = rng.choice(p.search_topics)
    return {"q": (q, {"query": q})}


def _g_settings(rng, p) -> Slots:
    kind = rng.choice(sorted(SETTINGS))
    return {"setting": (rng.choice(SETTINGS[kind]), {"setting_type": kind})}


# Each function's slot generator, paired with its phrasing templates from synth_tables.
GENERATORS = {
    "ACTION_SET_ALARM": _g_alarm,
    "ACTION_SET_TIMER": _g_timer,
    "ACTION_SHOW_ALARMS": _g_none,
    "ACTION_INSERT_EVENT": _g_event,
    "ACTION_IMAGE_CAPTURE": _g_none,
    "ACTION_VIDEO_CAPTURE": _g_none,
    "INTENT_ACTION_STILL_IMAGE_CAMERA": _g_none,
    "INTENT_ACTION_VIDEO_CAMERA": _g_none,
    "ACTION_PICK": _g_pick,
    "get_contact_info": _g_contact_info,
    "get_contact_info_from_uri": _g_contact_uri,
    "ACTION_VIEW_CONTACT": _g_view_contact,
    "ACTION_EDIT_CONTACT": _g_edit_contact,
    "ACTION_INSERT_CONTACT": _g_insert_contact,
    "send_email": _g_email,
    "send_message": _g_message,
    "dial": _g_dial,
    "ACTION_GET_RINGTONE": _g_none,
    "ACTION_GET_CONTENT": _g_get_content,
    "ACTION_OPEN_DOCUMENT": _g_open_doc,
    "ACTION_CREATE_DOCUMENT": _g_create_doc,
    "search_location": _g_location,
    "web_search": _g_web,
    "open_settings": _g_settings,
}
TEMPLATES: dict[str, tuple[Callable, list[T]]] = {name: (gen, TEMPLATE_TEXTS[name])
                                                  for name, gen in GENERATORS.items()}


def _fill(template: T, slots: Slots) -> tuple[str, dict] | None:
    text, fixed, verbatim = template
    used = re.findall(r"{(\w+)}", text)
    if any(u not in slots for u in used):
        return None
    args: dict[str, Any] = {}
    for u in used:
        surface, slot_args = slots[u]
        args.update(slot_args)
        if u in verbatim:
            args[verbatim[u]] = surface
    args.update(fixed)
    return text.format(**{u: slots[u][0] for u in used}), args


def _templates(name: str, split: str) -> list[T]:
    return _split(TEMPLATES[name][1], split) + (TRAIN_ONLY.get(name, []) if split == "train" else [])


FRAME_FRACTION = 0.5  # training requests worded by pocketlm.intent.phrasings instead of a fixed template


def _slot_regex(template: str) -> re.Pattern:
    parts = re.split(r"{\w+}", template.rstrip("?!."))
    return re.compile("(.+?)".join(re.escape(p) for p in parts) + r"[?!.]?", re.IGNORECASE)


@functools.lru_cache(maxsize=None)
def test_template_patterns() -> dict[str, tuple[re.Pattern, ...]]:
    """Function or multi-call kind -> regexes of its test templates (slots match anything). A training
    request that fully matches one is a test phrasing and is never generated."""
    out = {name: tuple(_slot_regex(t[0]) for t in _split(ts, "test")) for name, (_, ts) in TEMPLATES.items()}
    out.update({kind: tuple(_slot_regex(t) for t in _split(ts, "test")) for kind, (_, ts) in MULTI.items()})
    return out


def is_test_phrasing(kind: str, text: str) -> bool:
    return any(p.fullmatch(text) for p in test_template_patterns().get(kind, ()))


def _single(rng: random.Random, pools: _Pools, name: str, frames: bool = True) -> tuple[str, list[dict]]:
    gen, _ = TEMPLATES[name]
    use_frame = frames and pools.split == "train" and rng.random() < FRAME_FRACTION
    while True:
        template = frame_template(rng, name) if use_frame else rng.choice(_templates(name, pools.split))
        filled = _fill(template, gen(rng, pools))
        if filled and not (use_frame and is_test_phrasing(name, filled[0])):
            text, args = filled
            return text, [{"id": 0, "name": name, "arguments": args}]


# ----------------------------------------------------------------------------- multi-call requests

def _n_dial(rng, p):
    n = rng.choice(p.names)
    return {"name": n}, [("get_contact_info", {"name": n, "key": "phone"}), ("dial", {"phone_number": "#0"})]


def _n_text(rng, p):
    n, b = rng.choice(p.names), rng.choice(p.bodies)
    return {"name": n, "body": b}, [("get_contact_info", {"name": n, "key": "phone"}),
                                    ("send_message", {"phone_number": "#0", "body": b})]


def _n_email(rng, p):
    n, s, b = rng.choice(p.names), rng.choice(p.email_subjects), rng.choice(p.bodies)
    return {"name": n, "subject": s, "body": b}, [("get_contact_info", {"name": n, "key": "email"}),
                                                  ("send_email", {"to": ["#0"], "subject": s, "body": b})]


def _n_edit(rng, p):
    n, num = rng.choice(p.names), _phone(rng)
    return {"name": n, "number": num}, [("get_contact_info", {"name": n, "key": "uri"}),
                                        ("ACTION_EDIT_CONTACT", {"contact_uri": "#0", "contact_info": {"phone": num}})]


def _n_pick_view(rng, p):
    return {}, [("ACTION_PICK", {}), ("ACTION_VIEW_CONTACT", {"contact_uri": "#0"})]


def _n_photo_email(rng, p):
    to, s = _email(rng, rng.choice(p.names)), rng.choice(p.email_subjects)
    b = rng.choice(p.bodies)
    return {"to": to, "subject": s, "body": b}, [
        ("ACTION_IMAGE_CAPTURE", {}), ("send_email", {"to": [to], "subject": s, "body": b, "attachments": ["#0"]})]


def _n_ringtone_alarm(rng, p):
    said, h, m = _time(rng)
    return {"time": said}, [("ACTION_GET_RINGTONE", {}),
                            ("ACTION_SET_ALARM", {"EXTRA_HOUR": h, "EXTRA_MINUTES": m, "EXTRA_RINGTONE": "#0"})]


def _p_alarm_timer(rng, p):
    said, h, m = _time(rng)
    dsaid, dval = _duration(rng)
    return {"time": said, "duration": dsaid}, [("ACTION_SET_ALARM", {"EXTRA_HOUR": h, "EXTRA_MINUTES": m}),
                                               ("ACTION_SET_TIMER", {"duration": dval})]


def _p_search_map(rng, p):
    q, place = rng.choice(p.search_topics), rng.choice(p.places)
    return {"q": q, "place": place}, [("web_search", {"query": q}), ("search_location", {"query": place})]


def _p_settings_dial(rng, p):
    kind = rng.choice(sorted(SETTINGS))
    num = _phone(rng)
    return {"setting": rng.choice(SETTINGS[kind]), "number": num}, [
        ("open_settings", {"setting_type": kind}), ("dial", {"phone_number": num})]


# Nested requests (the second call uses the first one's result) and parallel ones (two independent calls).
MULTI_GENERATORS = {
    "dial_contact": _n_dial, "text_contact": _n_text, "email_contact": _n_email, "edit_contact": _n_edit,
    "pick_view": _n_pick_view, "photo_email": _n_photo_email, "ringtone_alarm": _n_ringtone_alarm,
    "alarm_timer": _p_alarm_timer, "search_map": _p_search_map, "settings_dial": _p_settings_dial,
}
MULTI: dict[str, tuple[Callable, list[str]]] = {kind: (gen, MULTI_TEXTS[kind])
                                                for kind, gen in MULTI_GENERATORS.items()}


def _multi_frame(rng: random.Random, pools: _Pools, kind: str) -> tuple[str, list[dict]]:
    while True:
        if kind in PARALLEL:  # two single-call wordings side by side, in either order
            parts = [_single(rng, pools, name, frames=True) for name in PARALLEL[kind]]
            rng.shuffle(parts)
            second = parts[1][0]
            text = parts[0][0].rstrip(".!") + rng.choice(JOINERS) + second[0].lower() + second[1:]
            calls = [dict(parts[0][1][0], id=0), dict(parts[1][1][0], id=1)]
        else:
            gen, _ = MULTI[kind]
            slots, pairs = gen(rng, pools)
            leads, mods = NESTED_FRAMES[kind]
            text = finish(rng, compose(rng, leads, mods)[0]).format(**slots)
            calls = [{"id": i, "name": n, "arguments": a} for i, (n, a) in enumerate(pairs)]
        if not is_test_phrasing(kind, text):
            return text, calls


def _multi(rng: random.Random, pools: _Pools, kind: str) -> tuple[str, list[dict]]:
    if pools.split == "train" and (kind in NESTED_FRAMES or kind in PARALLEL) and rng.random() < FRAME_FRACTION:
        return _multi_frame(rng, pools, kind)
    gen, templates = MULTI[kind]
    slots, calls = gen(rng, pools)
    if pools.split == "train":
        templates = _split(templates, "train") + MULTI_TRAIN_ONLY.get(kind, [])
    else:
        templates = _split(templates, "test")
    text = rng.choice(templates).format(**slots)
    return text, [{"id": i, "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]


# ----------------------------------------------------------------------------- entry point

def template_texts(split: str) -> set[str]:
    """All template strings of a split (for the disjointness check)."""
    out = {t[0] for name in TEMPLATES for t in _templates(name, split)}
    out |= {t for _, ts in MULTI.values() for t in _split(ts, split)}
    if split == "train":
        out |= {t for ts in MULTI_TRAIN_ONLY.values() for t in ts}
    return out


def synthesize(n: int, seed: int = 0, split: str = "train", multi_fraction: float = 0.3) -> list[Sample]:
    """``n`` DroidCall-format samples. Deterministic in (n, seed, split); every function appears
    (single calls pick a function uniformly), ``multi_fraction`` are two-call requests
    (nested through "#0" or independent)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rng = random.Random(f"{seed}-{split}")
    pools = _Pools(split)
    names = sorted(TEMPLATES)
    multis = sorted(MULTI)
    out = []
    for i in range(n):
        if rng.random() < multi_fraction:
            text, answers = _multi(rng, pools, rng.choice(multis))
        else:
            text, answers = _single(rng, pools, rng.choice(names))
        out.append(Sample(text, answers))
    return out

"""Compositional training phrasings: a request is a lead (the action, with its required slots) plus
modifiers (the other slots, each with many ways to introduce it) in random order, so the training split
sees thousands of wordings per function instead of a dozen fixed templates.

DroidCall's training data was written by GPT-4 and is varied in just this way; a tiny model trained on a
few templates learns "the value is the word after X in template Y" and fails on a new sentence, while
one trained on many combinations learns to find a value by its own cue ("labeled ...", "to ...").

Training only. `synth.test_template_patterns` turns every test template into a regex, and a generated
request that a test template could have produced is dropped, so the held-out phrasings stay unseen.
"""

from __future__ import annotations

import random
from typing import Any

# function -> (leads, modifiers, verbatim). A lead is "text" or ("text", fixed arguments). A modifier is
# (phrasings, fixed arguments, probability of being used; 1.0 = always). verbatim maps a slot to the
# argument that takes its text as said (as in synth.TEMPLATES).
Frame = tuple[list, list[tuple[list[str], dict, float]], dict[str, str]]

_LABEL = ["labeled {label}", "called {label}", "named {label}", "with the label {label}", "that says {label}",
          "with the message {label}", "titled {label}", "and name it {label}", "and call it {label}",
          "with the note {label}", "label {label}"]
_BODY = ["saying {body}", "that says {body}", "with the message {body}", "and say {body}", "telling them {body}",
         "with the text {body}", "message {body}", "text {body}", "body {body}", "and write {body}"]

FRAMES: dict[str, Frame] = {
    "ACTION_SET_ALARM": (
        ["set an alarm for {time}", "wake me at {time}", "alarm at {time}", "I need to be up at {time}",
         "get me up by {time}", "make me an alarm for {time}", "schedule an alarm at {time}", "ring me at {time}",
         "set my alarm for {time}", "I want an alarm at {time}", "create an alarm for {time}",
         "new alarm, {time}", "set the alarm to {time}", "wake me up {time}"],
        [(_LABEL, {}, 0.45), (["{days}", "and repeat it {days}"], {}, 0.3),
         (["and vibrate", "with vibration on", "that vibrates"], {"EXTRA_VIBRATE": True}, 0.1),
         (["without sound", "with no ringtone", "silently"], {"EXTRA_RINGTONE": "silent"}, 0.07),
         (["but let me check it first", "and show it to me before saving"], {"EXTRA_SKIP_UI": False}, 0.07)],
        {"label": "EXTRA_MESSAGE"}),
    "ACTION_SET_TIMER": (
        ["set a timer for {duration}", "start a {duration} timer", "time {duration}", "countdown of {duration}",
         "count down from {duration}", "I need a timer for {duration}", "start timing {duration}",
         "timer, {duration}", "let me know in {duration}", "begin a {duration} countdown",
         "a {duration} timer please", "put a timer on for {duration}"],
        [(_LABEL + ["for the {label}", "for my {label}"], {}, 0.45)],
        {"label": "EXTRA_MESSAGE"}),
    "ACTION_SHOW_ALARMS": (
        ["show my alarms", "what alarms are set", "list the alarms", "open my alarms", "display the alarm list",
         "which alarms do I have", "check my alarms", "see my alarms", "view all alarms", "alarms, show them",
         "bring up my alarms", "what are my alarms"], [], {}),
    "ACTION_INSERT_EVENT": (
        ["add {title} to my calendar", "create an event {title}", "schedule {title}", "new calendar event {title}",
         "put {title} on the calendar", "calendar event called {title}", "make an event named {title}",
         "book {title}", "add an event titled {title}", "I have {title}, add it to the calendar",
         "save {title} in my calendar", "set up an event called {title}"],
        [(["on {when}", "for {when}", "{when}"], {}, 0.4),
         (["at {loc}", "in {loc}", "location {loc}", "held at {loc}"], {}, 0.4),
         (["about {desc}", "with the note {desc}", "description {desc}", "details {desc}", "note {desc}",
           "described as {desc}", "saying {desc}"], {}, 0.75),
         (["all day", "as an all-day event", "lasting all day"], {"EXTRA_EVENT_ALL_DAY": True}, 0.1)],
        {"title": "TITLE", "desc": "DESCRIPTION", "loc": "EVENT_LOCATION"}),
    "ACTION_IMAGE_CAPTURE": (
        ["take a picture", "snap a photo", "capture a photo", "photo now", "take a pic of this", "shoot a picture",
         "grab a picture", "take an image", "make a photo", "click a photo", "capture this in a picture",
         "I want a photo"], [], {}),
    "ACTION_VIDEO_CAPTURE": (
        ["record a video", "take a video", "film a clip", "capture a video", "record some footage",
         "shoot a clip", "make a video", "start a video recording", "film this now", "video this",
         "I want to film a video", "grab a video clip"], [], {}),
    "INTENT_ACTION_STILL_IMAGE_CAMERA": (
        ["open the camera for photos", "launch the photo camera", "camera app in photo mode",
         "start the camera to take pictures", "open the still camera", "bring up the camera for pictures",
         "turn on the photo camera", "get the picture camera open", "open camera, photo mode",
         "switch on the camera for photos", "I need the photo camera", "run the camera in picture mode"], [], {}),
    "INTENT_ACTION_VIDEO_CAMERA": (
        ["open the camera for videos", "launch the camcorder", "camera app in video mode",
         "start the camera to record video", "open the video recorder", "bring up the camera for filming",
         "turn on the video camera", "get the video camera open", "open camera, video mode",
         "switch on the camera for video", "I need the video camera", "run the camera in video mode"], [], {}),
    "ACTION_PICK": (
        ["pick a {kind} from contacts", "choose a {kind}", "select a {kind} from my contacts",
         "let me choose a {kind}", "I want to pick a {kind}", "open contacts and pick a {kind}",
         "help me choose a {kind}", "browse my contacts for a {kind}", "select one {kind}",
         "find me a {kind} to pick", "let me select a {kind} in contacts", "choose one {kind} from the list"],
        [], {}),
    "get_contact_info": (
        ["what's {name}'s {key}", "find {name}'s {key}", "look up the {key} of {name}", "get the {key} for {name}",
         "I need {name}'s {key}", "tell me {name}'s {key}", "show me the {key} of {name}", "the {key} of {name}",
         "search contacts for {name}'s {key}", "do you have the {key} of {name}", "give me the {key} for {name}",
         "{name}, what is their {key}", "fetch {name}'s {key}", "which {key} is saved for {name}"], [],
        {"name": "name"}),
    "get_contact_info_from_uri": (
        ["get the {key} from {uri}", "what's the {key} of {uri}", "read the {key} in {uri}",
         "find the {key} of contact {uri}", "look up {uri} and give me the {key}", "the {key} stored at {uri}",
         "fetch the {key} of {uri}", "show the {key} for contact {uri}", "which {key} has {uri}",
         "I need the {key} from contact {uri}", "retrieve {uri}'s {key}", "tell me the {key} of {uri}"], [], {}),
    "ACTION_VIEW_CONTACT": (
        ["show contact {uri}", "open {uri}", "view {uri}", "display the contact {uri}", "let me see {uri}",
         "bring up the contact at {uri}", "open up contact {uri}", "show me {uri}", "look at contact {uri}",
         "I want to view {uri}", "pull up the contact {uri}", "view the details of {uri}"], [], {}),
    "ACTION_EDIT_CONTACT": (
        ["edit {uri}", "update contact {uri}", "change contact {uri}", "modify {uri}", "for {uri}",
         "in contact {uri}", "fix contact {uri}", "on {uri}", "contact {uri} needs an update",
         "open {uri} for editing", "edit the contact {uri}", "update {uri}"],
        [(["set the {field} to {value}", "make the {field} {value}", "{field} {value}", "new {field} {value}",
           "change the {field} to {value}", "the {field} is now {value}", "with the {field} {value}",
           "{field} should be {value}", "update the {field} to {value}", "put {value} as the {field}"], {}, 1.0)],
        {}),
    "ACTION_INSERT_CONTACT": (
        ["add a contact: {info}", "save a new contact {info}", "create contact {info}", "new contact, {info}",
         "store {info} as a contact", "add {info} to my contacts", "put a new entry {info}",
         "make a new contact with {info}", "save {info} in contacts", "add this person, {info}",
         "insert a contact {info}", "register a contact: {info}"], [], {}),
    "send_email": (
        ["email {to}", "send an email to {to}", "write an email to {to}", "mail {to}", "compose a mail to {to}",
         "send {to} an email", "drop {to} a mail", "write to {to} by email", "shoot an email to {to}",
         "email the address {to}", "send mail to {to}", "I want to email {to}"],
        [(["subject {subject}", "with the subject {subject}", "titled {subject}", "about {subject}",
           "subject line {subject}", "with {subject} as the subject", "re {subject}"], {}, 0.95),
         (_BODY, {}, 0.95), (["cc {cc}", "and copy {cc}", "with {cc} in cc", "cc'ing {cc}"], {}, 0.25)],
        {"subject": "subject", "body": "body"}),
    "send_message": (
        ["text {number}", "send a message to {number}", "SMS {number}", "message {number}", "send {number} a text",
         "write a text to {number}", "send an SMS to {number}", "text the number {number}",
         "shoot {number} a message", "message the number {number}", "send a text message to {number}",
         "drop {number} a text"],
        [(_BODY, {}, 1.0)], {"body": "body"}),
    "dial": (
        ["call {number}", "dial {number}", "ring {number}", "phone {number}", "make a call to {number}",
         "place a call to {number}", "call the number {number}", "dial the number {number}",
         "give {number} a call", "start a call with {number}", "open the dialer for {number}",
         "I want to call {number}"], [], {}),
    "ACTION_GET_RINGTONE": (
        ["pick a ringtone", "choose a new ringtone", "open the ringtones", "select a ringtone", "change the ringtone",
         "let me pick a ring sound", "browse the ringtones", "show me ringtones to choose from",
         "I want another ringtone", "set a different ringtone", "ringtone picker", "help me choose a ringtone"],
        [], {}),
    "ACTION_GET_CONTENT": (
        ["pick one of my {kind}", "choose from my {kind}", "select a file from my {kind}", "let me pick from {kind}",
         "get one of my {kind}", "browse my {kind} and pick one", "open my {kind} to choose one",
         ("pick several {kind}", {"allow_multiple": True}), ("select multiple {kind}", {"allow_multiple": True}),
         ("choose a few of my {kind}", {"allow_multiple": True}), ("let me pick some {kind}", {"allow_multiple": True}),
         ("grab several of my {kind}", {"allow_multiple": True})], [], {}),
    "ACTION_OPEN_DOCUMENT": (
        ["open a {kind} document", "open one of my {kind2}", "open a document from my {kind}",
         "let me open my {kind2}", "find a {kind} document and open it", "browse and open {kind2}",
         ("open several {kind2}", {"allow_multiple": True}), ("open multiple documents, {kind2}", {"allow_multiple": True}),
         ("open a few {kind2} documents", {"allow_multiple": True}), ("let me open some {kind2}", {"allow_multiple": True})],
        [], {}),
    "ACTION_CREATE_DOCUMENT": (
        ["create a {kind}", "make a new {kind}", "start a {kind}", "new {kind}", "save a new {kind}",
         "I need a new {kind}", "create a new {kind} document", "open a blank {kind}"],
        [(["named {fname}", "called {fname}", "titled {fname}", "with the name {fname}", "and name it {fname}",
           "as {fname}", "file name {fname}"], {}, 1.0)],
        {"fname": "initial_name"}),
    "search_location": (
        ["find {place} on the map", "where is {place}", "show {place} on maps", "navigate to {place}",
         "map {place}", "locate {place}", "directions to {place}", "search maps for {place}",
         "look for {place} on the map", "how far is {place}", "take me to {place}", "get me to {place}"], [], {}),
    "web_search": (
        ["search for {q}", "look up {q}", "web search {q}", "search the internet for {q}", "find {q} online",
         "search online for {q}", "I'd like to learn about {q}", "what's out there on {q}", "browse the web for {q}",
         "get me results for {q}", ("google {q}", {"engine": "google"}), ("search {q} with Google", {"engine": "google"}),
         ("use Baidu to look up {q}", {"engine": "baidu"}), ("Baidu search {q}", {"engine": "baidu"})], [], {}),
    "open_settings": (
        ["open {setting} settings", "go to the {setting} settings", "show the {setting} settings",
         "take me to {setting} settings", "I need the {setting} settings", "bring up {setting} settings",
         "open the settings for {setting}", "launch the {setting} settings", "change my {setting} settings",
         "settings for {setting}", "navigate to {setting} settings", "adjust {setting} in settings"], [], {}),
}

# Nested requests: the first call looks a contact up, the second uses "#0". Leads are the whole request.
NESTED_FRAMES: dict[str, tuple[list[str], list[tuple[list[str], dict, float]]]] = {
    "dial_contact": (["call {name}", "phone {name}", "ring {name}", "dial {name}", "give {name} a call",
                      "call my contact {name}", "get {name} on the line", "make a call to {name}",
                      "I need to call {name}", "place a call to {name}", "dial {name}'s number",
                      "phone my friend {name}"], []),
    "text_contact": (["text {name}", "message {name}", "send {name} a text", "SMS {name}", "tell {name} by text",
                      "send a message to {name}", "write {name} a text", "text my contact {name}",
                      "let {name} know by message", "drop {name} a message"], [(_BODY, {}, 1.0)]),
    "email_contact": (["email {name}", "send {name} an email", "mail {name}", "write an email to {name}",
                       "compose a mail for {name}", "email my contact {name}", "drop {name} an email",
                       "send an email to my friend {name}"],
                      [(["subject {subject}", "with the subject {subject}", "titled {subject}", "about {subject}",
                         "re {subject}"], {}, 1.0), (_BODY, {}, 1.0)]),
    "edit_contact": (["update {name}'s phone to {number}", "change {name}'s number to {number}",
                      "set {name}'s phone number to {number}", "{name}'s new number is {number}",
                      "edit {name}, phone {number}", "save {number} as {name}'s number",
                      "change the phone of my contact {name} to {number}", "update contact {name} with {number}",
                      "{name} changed their number to {number}", "replace {name}'s number with {number}"], []),
}
# Side-by-side requests: two single-call frames joined by one of these.
JOINERS = [" and ", ", then ", ", and also ", "; ", ". Also ", " and then ", ", plus "]
PARALLEL = {"alarm_timer": ("ACTION_SET_ALARM", "ACTION_SET_TIMER"), "search_map": ("web_search", "search_location"),
            "settings_dial": ("open_settings", "dial")}


def _pick_lead(rng: random.Random, leads: list) -> tuple[str, dict]:
    lead = rng.choice(leads)
    return (lead, {}) if isinstance(lead, str) else (lead[0], dict(lead[1]))


def compose(rng: random.Random, leads: list, mods: list) -> tuple[str, dict]:
    """One wording: a lead, then the chosen modifiers in random order, each with its own phrasing."""
    text, fixed = _pick_lead(rng, leads)
    chosen = [m for m in mods if rng.random() < m[2]]
    rng.shuffle(chosen)
    for phrasings, mod_fixed, _ in chosen:
        text += rng.choice([" ", " ", ", "]) + rng.choice(phrasings)
        fixed.update(mod_fixed)
    return text, fixed


def finish(rng: random.Random, text: str) -> str:
    """Sentence case and, sometimes, closing punctuation."""
    text = text[0].upper() + text[1:]
    return text + rng.choice(["", "", ".", "!"]) if not text.endswith("?") else text


def frame_template(rng: random.Random, name: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A (text, fixed arguments, verbatim slots) template for `name`, as synth.TEMPLATES entries are."""
    leads, mods, verbatim = FRAMES[name]
    text, fixed = compose(rng, leads, mods)
    return finish(rng, text), fixed, verbatim

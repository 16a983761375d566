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
"""

from __future__ import annotations

import functools
import random
import re
import string
from typing import Any, Callable

from pocketlm.intent.phrasings import JOINERS, NESTED_FRAMES, PARALLEL, compose, finish, frame_template
from pocketlm.intent.specs import Sample

# ----------------------------------------------------------------------------- value pools

NAMES = ["Tom", "Alice", "Victor", "Maria", "John Smith", "Priya", "Chen Wei", "Olivia", "Carlos", "Emma",
         "Noah", "Fatima", "Liam", "Sofia", "Mom", "Dad", "Grace Lee", "Hiro", "Anna", "Ben", "Zoe", "Omar",
         "Lucas", "Mia", "Jack Brown", "Nina", "Ravi", "Ella", "Sam", "Leo", "Ivy Chen", "Mark", "Hannah",
         "Diego", "Yuki", "Paul"]
ALARM_LABELS = ["Take medicine", "Gym", "Team standup", "Wake up", "Call the bank", "Pick up kids", "Yoga",
                "Water the plants", "Flight check-in", "Study time", "Walk the dog", "Morning run",
                "Dentist appointment", "Feed the cat", "Meditation", "Laundry", "Pay rent", "Lunch break",
                "Bedtime", "Practice piano"]
TIMER_LABELS = ["Pasta", "Tea", "Laundry", "Pizza", "Workout", "Nap", "Eggs", "Cookies", "Break",
                "Rice", "Bread", "Homework", "Plank", "Steak", "Reading", "Parking meter"]
EVENT_TITLES = ["Team meeting", "Birthday party", "Doctor appointment", "Project review", "Dinner with friends",
                "Book club", "Soccer practice", "Job interview", "Parent-teacher conference", "Yoga class",
                "Budget planning", "Coffee chat", "Hackathon kickoff", "Wedding rehearsal", "Quarterly review",
                "Guitar lesson", "Car service", "Farewell lunch", "Movie night", "Code review"]
EVENT_DESCS = ["Discuss the roadmap", "Bring a gift", "Annual checkup", "Go over the slides", "Celebrate the launch",
               "Talk about the new book", "Bring water and shoes", "Prepare the portfolio", "Meet the teachers",
               "Stretching session", "Plan next year's spending", "Catch up", "Form teams and pick ideas",
               "Run through the ceremony", "Review the numbers", "Practice chords", "Oil change",
               "Say goodbye to Ana", "Watch a classic film", "Review pull requests"]
LOCATIONS = ["Room 101", "Central Park", "the main office", "City Hospital", "Blue Cafe", "the library",
             "Conference Room B", "Downtown Gym", "Building 4", "the town hall", "Riverside Stadium",
             "Green Garden Restaurant", "the community center", "Studio 7", "Hotel Plaza", "the school hall"]
EMAIL_SUBJECTS = ["Meeting notes", "Weekend plans", "Invoice", "Project update", "Quick question", "Travel itinerary",
                  "Dinner tonight", "Report draft", "Happy birthday", "Schedule change", "Photos from the trip",
                  "Budget approval", "Lunch order", "Welcome aboard", "Holiday schedule", "Feedback request"]
BODIES = ["See you at 5", "I will be late today", "Thanks for your help", "Can we move the call to Friday",
          "The files are ready", "Don't forget the tickets", "Happy birthday to you", "Let's meet at noon",
          "Please review the draft", "I'm on my way", "Call me when you are free", "Dinner is ready",
          "The package arrived", "Good luck with the exam", "The meeting is cancelled", "See you tomorrow",
          "Please send the report", "Thanks for dinner", "We landed safely", "Let me know what you think"]
SEARCH_TOPICS = ["best pizza recipe", "weather tomorrow", "Python tutorials", "how to tie a tie", "latest football scores",
                 "cheap flights to Tokyo", "symptoms of flu", "history of Rome", "electric cars review",
                 "how to grow tomatoes", "learn Spanish online", "stock market news", "healthy breakfast ideas",
                 "meaning of life", "best hiking trails", "how to fix a flat tire", "new movies this week",
                 "machine learning basics", "yoga for beginners", "translate hello to French"]
PLACES = ["coffee shops near me", "Eiffel Tower", "nearest gas station", "Golden Gate Bridge", "Italian restaurants",
          "the nearest pharmacy", "Times Square", "train station", "Louvre Museum", "parking near the stadium",
          "Starbucks on Main Street", "the airport", "public library", "ATM nearby", "sushi restaurants downtown",
          "Central Station"]
FILE_NAMES = ["notes.txt", "Report.pdf", "Budget 2025.xlsx", "Shopping list.txt", "Meeting minutes.docx", "Photo.jpg",
              "Resume.pdf", "Travel plan.txt", "Invoice 42.pdf", "Recipe.txt", "Song.mp3", "Diary.txt"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Stark Industries", "Wayne Enterprises", "Hooli", "Vandelay"]
DOMAINS = ["example.com", "mail.com", "work.org", "company.net"]

SETTINGS = {"wifi": ["Wi-Fi", "wifi"], "bluetooth": ["Bluetooth"], "display": ["display", "screen brightness"],
            "airplane_mode": ["airplane mode", "flight mode"], "wireless": ["wireless and network", "network"],
            "apn": ["APN", "access point names"], "date": ["date and time", "clock"],
            "locale": ["language", "locale"], "input_method": ["keyboard", "input method"],
            "security": ["security", "screen lock"], "location": ["location", "GPS"],
            "internal_storage": ["storage", "internal storage"], "memory_card": ["SD card", "memory card"],
            "general": ["settings", "general settings"]}
MIMES = [("image/*", "images"), ("image/*", "photos"), ("application/pdf", "PDFs"), ("audio/*", "audio files"),
         ("audio/*", "songs"), ("video/*", "videos"), ("text/plain", "text files"), ("*/*", "files")]
CREATE_MIMES = [("text/plain", "text file"), ("application/pdf", "PDF"), ("image/jpeg", "JPEG image"),
                ("text/plain", "plain text document")]
PICK_KINDS = [("PHONE", "phone number"), ("EMAIL", "email address"), ("ADDRESS", "address"), ("ALL", "contact")]
KEYS = [("phone", "phone number"), ("phone", "number"), ("email", "email address"), ("email", "email"),
        ("address", "address"), ("address", "home address")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _split(items: list, split: str) -> list:
    """Disjoint train/test parts of a list: every 4th item is test."""
    part = [x for i, x in enumerate(items) if (i % 4 == 3) == (split == "test")]
    return part or items


class _Pools:
    def __init__(self, split: str):
        self.split = split
        for attr in ("NAMES", "ALARM_LABELS", "TIMER_LABELS", "EVENT_TITLES", "EVENT_DESCS", "LOCATIONS",
                     "EMAIL_SUBJECTS", "BODIES", "SEARCH_TOPICS", "PLACES", "FILE_NAMES", "COMPANIES"):
            setattr(self, attr.lower(), _split(globals()[attr], split))


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


# Templates: (text, fixed arguments, {slot: argument name that takes the slot's text verbatim}).
# Index % 4 == 3 → test template. Keep at least 4 per function so both splits have some.
T = tuple
TEMPLATES: dict[str, tuple[Callable, list[T]]] = {
    "ACTION_SET_ALARM": (_g_alarm, [
        ("Set an alarm for {time}", {}, {}),
        ("Wake me up at {time}", {}, {}),
        ("Please set an alarm at {time} labeled {label}", {}, {"label": "EXTRA_MESSAGE"}),
        ("Could you make sure I'm up by {time}?", {}, {}),
        ("Alarm at {time} {days} please", {}, {}),
        ("I need an alarm {days} at {time} called {label}", {}, {"label": "EXTRA_MESSAGE"}),
        ("Create a vibrating alarm for {time}", {"EXTRA_VIBRATE": True}, {}),
        ("Remind me with an alarm at {time} that says {label}", {}, {"label": "EXTRA_MESSAGE"}),
        ("Set a silent alarm for {time}", {"EXTRA_RINGTONE": "silent"}, {}),
        ("Add an alarm for {time} named {label} and let me confirm it first", {"EXTRA_SKIP_UI": False},
         {"label": "EXTRA_MESSAGE"}),
        ("Set up an alarm for {time} {days}", {}, {}),
        ("Get me up at {time} {days} with the label {label}", {}, {"label": "EXTRA_MESSAGE"}),
    ]),
    "ACTION_SET_TIMER": (_g_timer, [
        ("Set a timer for {duration}", {}, {}),
        ("Start a {duration} timer for {label}", {}, {"label": "EXTRA_MESSAGE"}),
        ("Count down {duration}", {}, {}),
        ("Can you time {duration} for me?", {}, {}),
        ("Timer: {duration}, name it {label}", {}, {"label": "EXTRA_MESSAGE"}),
        ("Please start a countdown of {duration}", {}, {}),
        ("I need a {duration} timer", {}, {}),
        ("Let me know when {duration} have passed, it's for the {label}", {}, {"label": "EXTRA_MESSAGE"}),
    ]),
    "ACTION_SHOW_ALARMS": (_g_none, [
        ("Show me my alarms", {}, {}),
        ("What alarms do I have set?", {}, {}),
        ("Open the list of alarms", {}, {}),
        ("Which alarms are on right now?", {}, {}),
        ("Display all my alarms", {}, {}),
        ("Let me see the alarms I've set", {}, {}),
        ("List my current alarms", {}, {}),
        ("Can I check my alarms?", {}, {}),
    ]),
    "ACTION_INSERT_EVENT": (_g_event, [
        ("Add {title} to my calendar: {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Schedule {title} at {loc} on {when}, note: {desc}", {},
         {"title": "TITLE", "loc": "EVENT_LOCATION", "desc": "DESCRIPTION"}),
        ("Create a calendar event called {title} about {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Put {title} in my calendar for {when}, description {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("New event {title} at {loc}: {desc}", {}, {"title": "TITLE", "loc": "EVENT_LOCATION", "desc": "DESCRIPTION"}),
        ("Add an all-day event {title} with the note {desc}", {"EXTRA_EVENT_ALL_DAY": True},
         {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Book {title} on {when} at {loc}, {desc}", {}, {"title": "TITLE", "loc": "EVENT_LOCATION", "desc": "DESCRIPTION"}),
        ("Could you add an event named {title} to the calendar? Details: {desc}", {},
         {"title": "TITLE", "desc": "DESCRIPTION"}),
    ]),
    "ACTION_IMAGE_CAPTURE": (_g_none, [
        ("Take a photo", {}, {}), ("Snap a picture for me", {}, {}), ("Capture a photo with the camera", {}, {}),
        ("Can you take a picture?", {}, {}), ("Take a quick picture", {}, {}), ("I want to capture an image", {}, {}),
        ("Shoot a photo now", {}, {}), ("Grab a photo of this", {}, {}),
    ]),
    "ACTION_VIDEO_CAPTURE": (_g_none, [
        ("Record a video", {}, {}), ("Capture a video clip", {}, {}), ("Film a short video for me", {}, {}),
        ("Can you record a clip?", {}, {}), ("Take a video", {}, {}), ("I want to record some video", {}, {}),
        ("Shoot a video now", {}, {}), ("Make a video recording", {}, {}),
    ]),
    "INTENT_ACTION_STILL_IMAGE_CAMERA": (_g_none, [
        ("Open the camera in photo mode", {}, {}), ("Launch the camera app for photos", {}, {}),
        ("Start the camera so I can take pictures", {}, {}), ("Bring up the photo camera", {}, {}),
        ("Open camera app", {}, {}), ("Switch on the still camera", {}, {}),
        ("I want the camera open for some photos", {}, {}), ("Get the camera ready for pictures", {}, {}),
    ]),
    "INTENT_ACTION_VIDEO_CAMERA": (_g_none, [
        ("Open the camera in video mode", {}, {}), ("Launch the video camera", {}, {}),
        ("Start the camera for recording videos", {}, {}), ("Bring up the video recorder", {}, {}),
        ("Open the camcorder", {}, {}), ("Switch the camera to video", {}, {}),
        ("I want the camera open to film", {}, {}), ("Get the video camera ready", {}, {}),
    ]),
    "ACTION_PICK": (_g_pick, [
        ("Let me pick a {kind} from my contacts", {}, {}), ("Choose a contact's {kind}", {}, {}),
        ("I want to select a {kind} from contacts", {}, {}), ("Pick a {kind} for me from the address book", {}, {}),
        ("Select a {kind} in my contacts", {}, {}), ("Open contacts so I can choose a {kind}", {}, {}),
        ("Help me pick a {kind}", {}, {}), ("Browse contacts and select a {kind}", {}, {}),
    ]),
    "get_contact_info": (_g_contact_info, [
        ("What is {name}'s {key}?", {}, {"name": "name"}), ("Find the {key} of {name}", {}, {"name": "name"}),
        ("Look up {name}'s {key}", {}, {"name": "name"}), ("Tell me the {key} for {name}", {}, {"name": "name"}),
        ("Get {name}'s {key} from my contacts", {}, {"name": "name"}),
        ("I need the {key} of my contact {name}", {}, {"name": "name"}),
        ("Show {name}'s {key}", {}, {"name": "name"}), ("Do I have a {key} saved for {name}?", {}, {"name": "name"}),
    ]),
    "get_contact_info_from_uri": (_g_contact_uri, [
        ("Get the {key} of the contact at {uri}", {}, {}), ("What's the {key} for contact {uri}?", {}, {}),
        ("Read the {key} from {uri}", {}, {}), ("Find the {key} stored in contact {uri}", {}, {}),
        ("Look up the {key} of {uri}", {}, {}), ("Fetch the {key} from the contact {uri}", {}, {}),
        ("Retrieve the {key} for {uri}", {}, {}), ("Which {key} does {uri} have?", {}, {}),
    ]),
    "ACTION_VIEW_CONTACT": (_g_view_contact, [
        ("Show the contact {uri}", {}, {}), ("Open contact {uri}", {}, {}),
        ("Display the details of {uri}", {}, {}), ("View the contact at {uri}", {}, {}),
        ("Let me see contact {uri}", {}, {}), ("Pull up {uri}", {}, {}),
        ("Open the contact card {uri}", {}, {}), ("I want to look at {uri}", {}, {}),
    ]),
    "ACTION_EDIT_CONTACT": (_g_edit_contact, [
        ("Edit contact {uri} and set the {field} to {value}", {}, {}),
        ("Change the {field} of {uri} to {value}", {}, {}),
        ("Update {uri} with {field} {value}", {}, {}),
        ("For contact {uri}, make the {field} {value}", {}, {}),
        ("Modify {uri}: new {field} is {value}", {}, {}),
        ("Set the {field} of contact {uri} to {value}", {}, {}),
        ("Please edit {uri}, {field} should be {value}", {}, {}),
        ("Replace the {field} on {uri} with {value}", {}, {}),
    ]),
    "ACTION_INSERT_CONTACT": (_g_insert_contact, [
        ("Add a new contact: {info}", {}, {}), ("Save this contact: {info}", {}, {}),
        ("Create a contact with {info}", {}, {}), ("Please store a new contact, {info}", {}, {}),
        ("New contact {info}", {}, {}), ("Put {info} in my contacts", {}, {}),
        ("Add to my address book: {info}", {}, {}), ("Make a contact entry for {info}", {}, {}),
    ]),
    "send_email": (_g_email, [
        ("Email {to} with subject {subject} saying {body}", {}, {"subject": "subject", "body": "body"}),
        ("Send an email to {to}, subject: {subject}, body: {body}", {}, {"subject": "subject", "body": "body"}),
        ("Write to {to} and cc {cc}: subject {subject}, message {body}", {}, {"subject": "subject", "body": "body"}),
        ("Mail {to} about {subject}: {body}", {}, {"subject": "subject", "body": "body"}),
        ("Compose an email for {to} titled {subject} that says {body}", {}, {"subject": "subject", "body": "body"}),
        ("Shoot {to} an email, subject {subject}, text {body}, and copy {cc}", {},
         {"subject": "subject", "body": "body"}),
        ("Drop a mail to {to} with the subject {subject} and the body {body}", {}, {"subject": "subject", "body": "body"}),
        ("Please email {to}. Subject: {subject}. Body: {body}", {}, {"subject": "subject", "body": "body"}),
    ]),
    "send_message": (_g_message, [
        ("Text {number} saying {body}", {}, {"body": "body"}),
        ("Send a message to {number}: {body}", {}, {"body": "body"}),
        ("SMS {number} with {body}", {}, {"body": "body"}),
        ("Message {number} that {body}", {}, {"body": "body"}),
        ("Send {number} a text: {body}", {}, {"body": "body"}),
        ("Please text {body} to {number}", {}, {"body": "body"}),
        ("Write a message to {number} saying {body}", {}, {"body": "body"}),
        ("Can you send an SMS to {number}? Tell them {body}", {}, {"body": "body"}),
    ]),
    "dial": (_g_dial, [
        ("Call {number}", {}, {}), ("Dial {number}", {}, {}), ("Ring {number} for me", {}, {}),
        ("Phone {number}", {}, {}), ("Open the dialer with {number}", {}, {}), ("Please call {number}", {}, {}),
        ("I need to call {number}", {}, {}), ("Can you dial {number}?", {}, {}),
    ]),
    "ACTION_GET_RINGTONE": (_g_none, [
        ("Let me choose a ringtone", {}, {}), ("Open the ringtone picker", {}, {}), ("Pick a ringtone", {}, {}),
        ("I want to select a new ringtone", {}, {}), ("Show me the ringtones", {}, {}),
        ("Choose a ringtone for me to use", {}, {}), ("Browse ringtones", {}, {}),
        ("Help me pick a sound for my ringtone", {}, {}),
    ]),
    "ACTION_GET_CONTENT": (_g_get_content, [
        ("Let me select some {kind}", {"allow_multiple": True}, {}), ("Pick one of my {kind}", {}, {}),
        ("Choose a file from my {kind}", {}, {}), ("I want to select multiple {kind}", {"allow_multiple": True}, {}),
        ("Select one from my {kind}", {}, {}), ("Open my {kind} so I can pick several", {"allow_multiple": True}, {}),
        ("Browse {kind} and pick one", {}, {}), ("Let me grab a few {kind}", {"allow_multiple": True}, {}),
    ]),
    "ACTION_OPEN_DOCUMENT": (_g_open_doc, [
        ("Open a document, {kind} only", {}, {}), ("Let me open one of my {kind2}", {}, {}),
        ("Open several documents of type {kind2}", {"allow_multiple": True}, {}),
        ("Find and open a document from my {kind}", {}, {}),
        ("Open documents: {kind2}, allow multiple", {"allow_multiple": True}, {}),
        ("Browse documents and open {kind2}", {}, {}), ("I need to open a {kind} document", {}, {}),
        ("Open some {kind2} for me", {"allow_multiple": True}, {}),
    ]),
    "ACTION_CREATE_DOCUMENT": (_g_create_doc, [
        ("Create a new {kind} named {fname}", {}, {"fname": "initial_name"}),
        ("Make a {kind} called {fname}", {}, {"fname": "initial_name"}),
        ("Start a new {kind} document, name it {fname}", {}, {"fname": "initial_name"}),
        ("Create {fname} as a {kind}", {}, {"fname": "initial_name"}),
        ("New {kind}: {fname}", {}, {"fname": "initial_name"}),
        ("Please create a {kind} with the name {fname}", {}, {"fname": "initial_name"}),
        ("Save a new {kind} as {fname}", {}, {"fname": "initial_name"}),
        ("I want a new {kind} file titled {fname}", {}, {"fname": "initial_name"}),
    ]),
    "search_location": (_g_location, [
        ("Find {place} on the map", {}, {}), ("Where is {place}?", {}, {}), ("Show me {place}", {}, {}),
        ("Search the map for {place}", {}, {}), ("Locate {place}", {}, {}), ("Navigate to {place}", {}, {}),
        ("Look up {place} in maps", {}, {}), ("How do I get to {place}?", {}, {}),
    ]),
    "web_search": (_g_web, [
        ("Search the web for {q}", {}, {}), ("Google {q}", {"engine": "google"}, {}), ("Look up {q} online", {}, {}),
        ("Search {q} on Baidu", {"engine": "baidu"}, {}), ("Find information about {q}", {}, {}),
        ("Can you search for {q} using Google?", {"engine": "google"}, {}), ("Search online: {q}", {}, {}),
        ("I want to know about {q}", {}, {}),
    ]),
    "open_settings": (_g_settings, [
        ("Open {setting} settings", {}, {}), ("Take me to the {setting} settings", {}, {}),
        ("Show {setting} settings", {}, {}), ("I want to change my {setting} settings", {}, {}),
        ("Go to {setting} settings", {}, {}), ("Open the settings for {setting}", {}, {}),
        ("Launch {setting} settings", {}, {}), ("Where can I adjust {setting}? Open it", {}, {}),
    ]),
}


# More training phrasings (never used for test): a tiny model only generalises to an unseen wording when
# it has seen the function and its values asked for in many ways, as DroidCall's generated data does.
L = "EXTRA_MESSAGE"
TRAIN_ONLY: dict[str, list[T]] = {
    "ACTION_SET_ALARM": [
        ("Alarm for {time}", {}, {}), ("Please wake me at {time}", {}, {}),
        ("Can you set my alarm to {time}?", {}, {}), ("I have to get up at {time}, set an alarm", {}, {}),
        ("Make an alarm {days} at {time}", {}, {}), ("Set an alarm called {label} for {time}", {}, {"label": L}),
        ("Alarm {time}, label it {label}", {}, {"label": L}), ("Put an alarm at {time} for {label}", {}, {"label": L})],
    "ACTION_SET_TIMER": [
        ("Timer for {duration}", {}, {}), ("Set the timer to {duration}", {}, {}),
        ("Start counting down {duration}", {}, {}), ("Give me a {duration} countdown", {}, {}),
        ("Set a {label} timer for {duration}", {}, {"label": L}), ("Time {duration} for the {label}", {}, {"label": L})],
    "ACTION_SHOW_ALARMS": [
        ("Show alarms", {}, {}), ("Pull up my alarms", {}, {}), ("Are any alarms set?", {}, {}),
        ("Go to my alarm list", {}, {}), ("Check the alarms on my phone", {}, {}), ("See all alarms", {}, {})],
    "ACTION_INSERT_EVENT": [
        ("Calendar: {title} on {when}, {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Add an event {title} at {loc}, details {desc}", {}, {"title": "TITLE", "loc": "EVENT_LOCATION", "desc": "DESCRIPTION"}),
        ("Schedule an event called {title}: {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("I have {title} on {when}. Add it with the note {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Make a calendar entry {title} described as {desc}", {}, {"title": "TITLE", "desc": "DESCRIPTION"}),
        ("Add {title} at {loc} to the calendar, about {desc}", {}, {"title": "TITLE", "loc": "EVENT_LOCATION", "desc": "DESCRIPTION"})],
    "ACTION_IMAGE_CAPTURE": [("Take a pic", {}, {}), ("Photo please", {}, {}), ("Capture an image now", {}, {}),
                             ("Snap a photo", {}, {}), ("Take a snapshot", {}, {}), ("Click a picture", {}, {})],
    "ACTION_VIDEO_CAPTURE": [("Record a clip", {}, {}), ("Film this", {}, {}), ("Start recording a video", {}, {}),
                             ("Capture some footage", {}, {}), ("Take a short video", {}, {}), ("Video this for me", {}, {})],
    "INTENT_ACTION_STILL_IMAGE_CAMERA": [("Open the photo camera", {}, {}), ("Camera in picture mode please", {}, {}),
                                         ("Start the still camera", {}, {}), ("Launch camera for pictures", {}, {}),
                                         ("Open my camera to take photos", {}, {}), ("Turn on the camera for photos", {}, {})],
    "INTENT_ACTION_VIDEO_CAMERA": [("Open the video camera", {}, {}), ("Camera in video mode please", {}, {}),
                                   ("Start the camcorder", {}, {}), ("Launch camera for videos", {}, {}),
                                   ("Open my camera to record video", {}, {}), ("Turn on the video recorder", {}, {})],
    "ACTION_PICK": [("Pick a {kind}", {}, {}), ("From my contacts, let me choose a {kind}", {}, {}),
                    ("Select a contact's {kind}", {}, {}), ("I need to choose a {kind} from the contact list", {}, {}),
                    ("Open my contacts to pick a {kind}", {}, {}), ("Let me select a {kind}", {}, {})],
    "get_contact_info": [
        ("{name}'s {key}?", {}, {"name": "name"}), ("What's the {key} of {name}?", {}, {"name": "name"}),
        ("Give me {name}'s {key}", {}, {"name": "name"}), ("Search my contacts for {name}'s {key}", {}, {"name": "name"}),
        ("Fetch the {key} for {name}", {}, {"name": "name"}), ("I'm looking for the {key} of {name}", {}, {"name": "name"}),
        ("Can you find {name}'s {key}?", {}, {"name": "name"}), ("Which {key} does {name} have?", {}, {"name": "name"})],
    "get_contact_info_from_uri": [
        ("Get {key} from {uri}", {}, {}), ("Tell me the {key} of contact {uri}", {}, {}),
        ("I need the {key} saved in {uri}", {}, {}), ("Show the {key} for {uri}", {}, {}),
        ("What {key} is stored at {uri}?", {}, {}), ("Read contact {uri} and give me the {key}", {}, {})],
    "ACTION_VIEW_CONTACT": [("Show {uri}", {}, {}), ("Display contact {uri}", {}, {}),
                            ("Open up the contact {uri}", {}, {}), ("Let me view {uri}", {}, {}),
                            ("Bring up contact {uri}", {}, {}), ("See the details of contact {uri}", {}, {})],
    "ACTION_EDIT_CONTACT": [
        ("Edit {uri}: {field} {value}", {}, {}), ("Change {uri}'s {field} to {value}", {}, {}),
        ("Update the {field} of contact {uri} to {value}", {}, {}), ("In {uri}, set {field} to {value}", {}, {}),
        ("Contact {uri} has a new {field}: {value}", {}, {}), ("Fix the {field} of {uri}, it is {value}", {}, {})],
    "ACTION_INSERT_CONTACT": [("Save {info} as a new contact", {}, {}), ("Add contact {info}", {}, {}),
                              ("Create a new contact for {info}", {}, {}), ("Store this person: {info}", {}, {}),
                              ("Add {info} to contacts", {}, {}), ("New entry in my contacts: {info}", {}, {})],
    "send_email": [
        ("Email {to}: subject {subject}, body {body}", {}, {"subject": "subject", "body": "body"}),
        ("Send {to} an email with the subject {subject} saying {body}", {}, {"subject": "subject", "body": "body"}),
        ("Write an email to {to} about {subject} that says {body}", {}, {"subject": "subject", "body": "body"}),
        ("Email {to} and {cc} about {subject}: {body}", {}, {"subject": "subject", "body": "body"}),
        ("Send mail to {to}, subject {subject}, message {body}", {}, {"subject": "subject", "body": "body"}),
        ("Can you email {to}? Subject {subject}, text {body}", {}, {"subject": "subject", "body": "body"})],
    "send_message": [("Text {number}: {body}", {}, {"body": "body"}), ("SMS to {number} saying {body}", {}, {"body": "body"}),
                     ("Send {number} the message {body}", {}, {"body": "body"}),
                     ("Tell {number} by text that {body}", {}, {"body": "body"}),
                     ("Message {number} with {body}", {}, {"body": "body"}),
                     ("Could you text {number}? Say {body}", {}, {"body": "body"})],
    "dial": [("Call the number {number}", {}, {}), ("Make a call to {number}", {}, {}), ("Ring up {number}", {}, {}),
             ("Dial the number {number} for me", {}, {}), ("Place a call to {number}", {}, {}), ("Could you call {number}?", {}, {})],
    "ACTION_GET_RINGTONE": [("Change my ringtone", {}, {}), ("Ringtone picker please", {}, {}),
                            ("Let me pick a ringtone sound", {}, {}), ("Select a ringtone", {}, {}),
                            ("I'd like a different ringtone", {}, {}), ("Open ringtones so I can choose", {}, {})],
    "ACTION_GET_CONTENT": [("Pick some {kind}", {"allow_multiple": True}, {}), ("Let me choose one of my {kind}", {}, {}),
                           ("Select {kind}", {}, {}), ("I want to pick several {kind}", {"allow_multiple": True}, {}),
                           ("Get me one from my {kind}", {}, {}), ("Choose multiple {kind}", {"allow_multiple": True}, {})],
    "ACTION_OPEN_DOCUMENT": [("Open a {kind} document", {}, {}), ("Open one of my {kind2}", {}, {}),
                             ("Open multiple documents: {kind2}", {"allow_multiple": True}, {}),
                             ("Let me open a document, {kind}", {}, {}), ("Open {kind2} documents, several of them",
                                                                         {"allow_multiple": True}, {}),
                             ("I want to open my {kind2}", {}, {})],
    "ACTION_CREATE_DOCUMENT": [("Create a {kind} file called {fname}", {}, {"fname": "initial_name"}),
                               ("New document {fname}, type {kind}", {}, {"fname": "initial_name"}),
                               ("Make a new {kind} and call it {fname}", {}, {"fname": "initial_name"}),
                               ("Create a document named {fname} as {kind}", {}, {"fname": "initial_name"}),
                               ("Start a {kind} called {fname}", {}, {"fname": "initial_name"}),
                               ("I need a {kind} named {fname}", {}, {"fname": "initial_name"})],
    "search_location": [("Map {place}", {}, {}), ("Show {place} on the map", {}, {}), ("Where's {place}?", {}, {}),
                        ("Find {place} in maps", {}, {}), ("Directions to {place}", {}, {}), ("Take me to {place}", {}, {})],
    "web_search": [("Search for {q}", {}, {}), ("Look up {q}", {}, {}), ("Google search {q}", {"engine": "google"}, {}),
                   ("Find {q} on the internet", {}, {}), ("Use Baidu to search {q}", {"engine": "baidu"}, {}),
                   ("Web search: {q}", {}, {}), ("Tell me about {q}", {}, {})],
    "open_settings": [("{setting} settings", {}, {}), ("Open settings for {setting}", {}, {}),
                      ("Bring up the {setting} settings", {}, {}), ("Show me the {setting} settings page", {}, {}),
                      ("Go into {setting} settings", {}, {}), ("I need to adjust {setting}, open the settings", {}, {})],
}
MULTI_TRAIN_ONLY: dict[str, list[str]] = {
    "dial_contact": ["Call my contact {name}", "Phone up {name}", "Make a call to {name}", "Ring up {name}",
                     "Dial {name}'s number", "Place a call to {name}"],
    "text_contact": ["Text {name}: {body}", "Send a text to {name} saying {body}", "SMS {name} {body}",
                     "Tell {name} by text {body}", "Message my contact {name} that {body}", "Text my friend {name}, {body}"],
    "email_contact": ["Email {name}, subject {subject}, saying {body}", "Send an email to {name} about {subject}: {body}",
                      "Write to {name} by email: {subject}, {body}", "Mail my contact {name} about {subject} saying {body}",
                      "Email my friend {name} with the subject {subject} and the body {body}",
                      "Compose a mail for {name}, subject {subject}, text {body}"],
    "edit_contact": ["Change {name}'s number to {number}", "Update the phone of {name} to {number}",
                     "Edit contact {name} with the number {number}", "{name}'s phone is now {number}, update it",
                     "Set the phone number of {name} to {number}", "Save {number} as the new number of {name}"],
    "pick_view": ["Pick a contact and show it", "Choose someone from my contacts and open their card",
                  "Select a contact, then display it", "Let me pick a contact to look at",
                  "Pick somebody and view the contact", "Choose a contact and show the details"],
    "photo_email": ["Take a photo and send it to {to}, subject {subject}, saying {body}",
                    "Snap a pic and email it to {to} about {subject}: {body}",
                    "Capture a picture and mail {to} with subject {subject} and text {body}",
                    "Photo, then email it to {to}. Subject {subject}, body {body}",
                    "Take a picture and send {to} an email titled {subject} saying {body}",
                    "Take a photo for {to} and email it, subject {subject}, message {body}"],
    "ringtone_alarm": ["Choose a ringtone and set an alarm for {time}", "Let me pick the ringtone for my {time} alarm",
                       "Set an alarm at {time} with a ringtone I pick", "Pick a ringtone, then an alarm at {time}",
                       "Alarm for {time} with a sound I choose", "Select a sound and set an alarm at {time} with it"],
    "alarm_timer": ["Alarm at {time} and a {duration} timer", "Set a timer for {duration} and an alarm for {time}",
                    "Wake me up at {time} and time {duration}", "Start a {duration} countdown and set an alarm at {time}",
                    "A timer of {duration}, and an alarm at {time}", "Set an alarm at {time}, then a timer for {duration}"],
    "search_map": ["Search for {q} and show {place} on the map", "Look up {q}, and find {place} in maps",
                   "Web search {q}, then map {place}", "Find {place} on the map and look up {q}",
                   "Search the internet for {q} and locate {place}", "Google {q} and give me directions to {place}"],
    "settings_dial": ["Open {setting} settings, then dial {number}", "Call {number} and then open {setting} settings",
                      "Go to the {setting} settings and phone {number}", "Dial {number}, also open {setting} settings",
                      "Bring up {setting} settings and call {number}", "Open the {setting} settings and ring {number}"],
}


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


MULTI: dict[str, tuple[Callable, list[str]]] = {
    "dial_contact": (_n_dial, ["Call {name}", "I want to phone {name}", "Ring {name} for me", "Get {name} on the phone",
                               "Dial my friend {name}", "Can you call {name}?", "Phone {name} now",
                               "Give {name} a call"]),
    "text_contact": (_n_text, ["Text {name} {body}", "Send {name} a message saying {body}", "Tell {name} by SMS: {body}",
                               "Message {name}: {body}", "SMS {name} that {body}", "Let {name} know by text: {body}",
                               "Shoot {name} a text, {body}", "Write to {name} by message: {body}"]),
    "email_contact": (_n_email, ["Email {name} about {subject}: {body}", "Send {name} an email, subject {subject}, body {body}",
                                 "Write {name} a mail titled {subject} saying {body}",
                                 "Mail {name} with subject {subject} and text {body}",
                                 "Compose an email to {name}: {subject}, {body}",
                                 "Drop {name} an email on {subject} saying {body}",
                                 "Can you email {name}? Subject {subject}. Body {body}",
                                 "Please mail {name} the subject {subject} with {body}"]),
    "edit_contact": (_n_edit, ["Update {name}'s number to {number}", "Change the phone of {name} to {number}",
                               "Edit {name} and set the phone number {number}", "Set {name}'s phone to {number}",
                               "{name} has a new number: {number}, edit the contact",
                               "Fix {name}'s contact with phone {number}", "Put {number} as {name}'s new phone",
                               "Modify contact {name}, phone {number}"]),
    "pick_view": (_n_pick_view, ["Let me choose a contact and then show its details", "Pick a contact and open it",
                                 "Select someone from contacts and display them", "Choose a contact to view",
                                 "Pick a contact, then view the card", "I want to select a contact and see the details",
                                 "Open a contact I pick", "Let me pick somebody and show me their info"]),
    "photo_email": (_n_photo_email, ["Take a photo and email it to {to} with subject {subject} saying {body}",
                                     "Snap a picture and send it to {to}, subject {subject}, body {body}",
                                     "Capture a photo then mail it to {to}: {subject}, {body}",
                                     "Take a picture and email {to} about {subject} with the note {body}",
                                     "Photograph this and send it by email to {to}, subject {subject}, text {body}",
                                     "Grab a photo and mail it to {to} titled {subject}: {body}",
                                     "Shoot a picture and email it to {to}. Subject {subject}. Body {body}",
                                     "Take a pic and send an email to {to} with it, subject {subject}, saying {body}"]),
    "ringtone_alarm": (_n_ringtone_alarm, ["Let me pick a ringtone and set an alarm at {time} with it",
                                           "Choose a ringtone for a {time} alarm",
                                           "Set an alarm for {time} using a ringtone I select",
                                           "Pick a sound and wake me at {time} with it",
                                           "I want an alarm at {time} with a ringtone I choose",
                                           "Select a ringtone, then set the alarm for {time}",
                                           "Alarm at {time}, but let me choose the ringtone first",
                                           "Open the ringtone picker and use it for a {time} alarm"]),
    "alarm_timer": (_p_alarm_timer, ["Set an alarm for {time} and a timer for {duration}",
                                     "Wake me at {time}, also start a {duration} timer",
                                     "Alarm at {time} plus a countdown of {duration}",
                                     "I need a {duration} timer and an alarm at {time}",
                                     "Start a timer for {duration} and set an alarm at {time}",
                                     "Set a {duration} timer, then an alarm for {time}",
                                     "Timer {duration}, alarm {time}",
                                     "Please time {duration} and also wake me up at {time}"]),
    "search_map": (_p_search_map, ["Search the web for {q} and find {place} on the map",
                                   "Look up {q} online, then show me {place}",
                                   "Find {place} on maps and search for {q}",
                                   "Search {q} and also locate {place}",
                                   "I want to know about {q} and where {place} is",
                                   "Show {place} on the map, then search the web for {q}",
                                   "Web search {q}; map search {place}",
                                   "Look up {q} and navigate to {place}"]),
    "settings_dial": (_p_settings_dial, ["Open {setting} settings and then call {number}",
                                         "Dial {number} after opening the {setting} settings",
                                         "Go to {setting} settings, then ring {number}",
                                         "Show {setting} settings and dial {number}",
                                         "Take me to {setting} settings and call {number}",
                                         "Call {number} and open {setting} settings",
                                         "Open settings for {setting}, then phone {number}",
                                         "I need the {setting} settings and a call to {number}"]),
}


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

"""DroidCall functions → real Android intents, printed as ``adb shell am start ...`` commands.

Actions and extras are the framework constants (AlarmClock, CalendarContract, ContactsContract,
Intent, MediaStore, RingtoneManager, Settings) as documented in Android's "Common intents" guide.
``am start`` flags: -a action, -d data URI, -t MIME type, -c category, --es string, --ei int,
--el long, --ez boolean, --eu Uri, --esa String[] (comma-separated), --eial ArrayList<Integer>.
Two functions are not intents but contacts-provider queries (``adb shell content query``).
A call whose arguments reference an earlier call's result ("#k") is printed as a commented step
with ``<resultk>`` placeholders: the value only exists on the device at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from pocketlm.intent.specs import FunctionSpec


@dataclass(frozen=True)
class AndroidIntent:
    action: str                     # the action string am start gets (or "content query")
    constant: str                   # the SDK constant it comes from
    extras: dict[str, str] = field(default_factory=dict)  # function argument → extra key / data
    note: str = ""


_ALARM = "android.intent.extra.alarm."
INTENTS: dict[str, AndroidIntent] = {
    "ACTION_SET_ALARM": AndroidIntent("android.intent.action.SET_ALARM", "AlarmClock.ACTION_SET_ALARM", {
        "EXTRA_HOUR": _ALARM + "HOUR", "EXTRA_MINUTES": _ALARM + "MINUTES", "EXTRA_MESSAGE": _ALARM + "MESSAGE",
        "EXTRA_DAYS": _ALARM + "DAYS", "EXTRA_RINGTONE": _ALARM + "RINGTONE", "EXTRA_VIBRATE": _ALARM + "VIBRATE",
        "EXTRA_SKIP_UI": _ALARM + "SKIP_UI"}),
    "ACTION_SET_TIMER": AndroidIntent("android.intent.action.SET_TIMER", "AlarmClock.ACTION_SET_TIMER", {
        "duration": _ALARM + "LENGTH", "EXTRA_MESSAGE": _ALARM + "MESSAGE", "EXTRA_SKIP_UI": _ALARM + "SKIP_UI"}),
    "ACTION_SHOW_ALARMS": AndroidIntent("android.intent.action.SHOW_ALARMS", "AlarmClock.ACTION_SHOW_ALARMS"),
    "ACTION_INSERT_EVENT": AndroidIntent("android.intent.action.INSERT", "Intent.ACTION_INSERT on Events.CONTENT_URI", {
        "TITLE": "title", "DESCRIPTION": "description", "EVENT_LOCATION": "eventLocation",
        "EXTRA_EVENT_ALL_DAY": "allDay", "EXTRA_EVENT_BEGIN_TIME": "beginTime",
        "EXTRA_EVENT_END_TIME": "endTime", "EXTRA_EMAIL": "android.intent.extra.EMAIL"}),
    "ACTION_IMAGE_CAPTURE": AndroidIntent("android.media.action.IMAGE_CAPTURE", "MediaStore.ACTION_IMAGE_CAPTURE"),
    "ACTION_VIDEO_CAPTURE": AndroidIntent("android.media.action.VIDEO_CAPTURE", "MediaStore.ACTION_VIDEO_CAPTURE"),
    "INTENT_ACTION_STILL_IMAGE_CAMERA": AndroidIntent(
        "android.media.action.STILL_IMAGE_CAMERA", "MediaStore.INTENT_ACTION_STILL_IMAGE_CAMERA"),
    "INTENT_ACTION_VIDEO_CAMERA": AndroidIntent(
        "android.media.action.VIDEO_CAMERA", "MediaStore.INTENT_ACTION_VIDEO_CAMERA"),
    "ACTION_PICK": AndroidIntent("android.intent.action.PICK", "Intent.ACTION_PICK", {"data_type": "-t"},
                                 "the picked URI goes back to the calling app"),
    "get_contact_info": AndroidIntent("content query", "ContactsContract.CommonDataKinds.* CONTENT_URI",
                                      {"name": "display_name", "key": "--uri"}, "contacts provider query, not an intent"),
    "get_contact_info_from_uri": AndroidIntent("content query", "Contacts.Data.CONTENT_DIRECTORY",
                                               {"contact_uri": "--uri", "key": "mimetype"},
                                               "contacts provider query, not an intent"),
    "ACTION_VIEW_CONTACT": AndroidIntent("android.intent.action.VIEW", "Intent.ACTION_VIEW", {"contact_uri": "-d"}),
    "ACTION_EDIT_CONTACT": AndroidIntent("android.intent.action.EDIT", "Intent.ACTION_EDIT", {
        "contact_uri": "-d", "contact_info": "ContactsContract.Intents.Insert.*"}),
    "ACTION_INSERT_CONTACT": AndroidIntent("android.intent.action.INSERT", "Intent.ACTION_INSERT on Contacts.CONTENT_TYPE",
                                           {"contact_info": "ContactsContract.Intents.Insert.*"}),
    "send_email": AndroidIntent("android.intent.action.SENDTO", "Intent.ACTION_SENDTO mailto:", {
        "to": "android.intent.extra.EMAIL", "cc": "android.intent.extra.CC", "bcc": "android.intent.extra.BCC",
        "subject": "android.intent.extra.SUBJECT", "body": "android.intent.extra.TEXT",
        "attachments": "android.intent.extra.STREAM"}),
    "send_message": AndroidIntent("android.intent.action.SENDTO", "Intent.ACTION_SENDTO smsto:", {
        "phone_number": "-d smsto:", "body": "sms_body", "subject": "subject", "attachments": "android.intent.extra.STREAM"}),
    "dial": AndroidIntent("android.intent.action.DIAL", "Intent.ACTION_DIAL", {"phone_number": "-d tel:"}),
    "ACTION_GET_RINGTONE": AndroidIntent("android.intent.action.RINGTONE_PICKER", "RingtoneManager.ACTION_RINGTONE_PICKER"),
    "ACTION_GET_CONTENT": AndroidIntent("android.intent.action.GET_CONTENT", "Intent.ACTION_GET_CONTENT", {
        "mime_type": "-t", "allow_multiple": "android.intent.extra.ALLOW_MULTIPLE"}),
    "ACTION_OPEN_DOCUMENT": AndroidIntent("android.intent.action.OPEN_DOCUMENT", "Intent.ACTION_OPEN_DOCUMENT", {
        "mime_types": "android.intent.extra.MIME_TYPES", "allow_multiple": "android.intent.extra.ALLOW_MULTIPLE"}),
    "ACTION_CREATE_DOCUMENT": AndroidIntent("android.intent.action.CREATE_DOCUMENT", "Intent.ACTION_CREATE_DOCUMENT", {
        "mime_type": "-t", "initial_name": "android.intent.extra.TITLE"}),
    "search_location": AndroidIntent("android.intent.action.VIEW", "Intent.ACTION_VIEW geo:", {"query": "-d geo:0,0?q="}),
    "web_search": AndroidIntent("android.intent.action.WEB_SEARCH", "Intent.ACTION_WEB_SEARCH", {"query": "query"}),
    "open_settings": AndroidIntent("android.settings.SETTINGS", "Settings.ACTION_*", {"setting_type": "-a"}),
}

SETTINGS_ACTIONS = {
    "general": "android.settings.SETTINGS",
    "wireless": "android.settings.WIRELESS_SETTINGS",
    "airplane_mode": "android.settings.AIRPLANE_MODE_SETTINGS",
    "wifi": "android.settings.WIFI_SETTINGS",
    "apn": "android.settings.APN_SETTINGS",
    "bluetooth": "android.settings.BLUETOOTH_SETTINGS",
    "date": "android.settings.DATE_SETTINGS",
    "locale": "android.settings.LOCALE_SETTINGS",
    "input_method": "android.settings.INPUT_METHOD_SETTINGS",
    "display": "android.settings.DISPLAY_SETTINGS",
    "security": "android.settings.SECURITY_SETTINGS",
    "location": "android.settings.LOCATION_SOURCE_SETTINGS",
    "internal_storage": "android.settings.INTERNAL_STORAGE_SETTINGS",
    "memory_card": "android.settings.MEMORY_CARD_SETTINGS",
}

PICK_TYPES = {  # ContactsContract CONTENT_TYPEs
    "ALL": "vnd.android.cursor.dir/contact",
    "PHONE": "vnd.android.cursor.dir/phone_v2",
    "EMAIL": "vnd.android.cursor.dir/email_v2",
    "ADDRESS": "vnd.android.cursor.dir/postal-address_v2",
    "POSTAL": "vnd.android.cursor.dir/postal-address_v2",
}

# java.util.Calendar day constants, as AlarmClock.EXTRA_DAYS expects
CALENDAR_DAYS = {"sun": 1, "mon": 2, "tue": 3, "wed": 4, "thu": 5, "fri": 6, "sat": 7}

# ContactsContract.Intents.Insert extra keys for DroidCall's contact_info keys
CONTACT_EXTRAS = {"name": "name", "phone": "phone", "email": "email", "company": "company", "address": "postal"}

_CONTACT_QUERY = {  # get_contact_info key → (provider URI, column)
    "phone": ("content://com.android.contacts/data/phones", "data1"),
    "email": ("content://com.android.contacts/data/emails", "data1"),
    "address": ("content://com.android.contacts/data/postals", "data1"),
    "uri": ("content://com.android.contacts/contacts", "_id:lookup"),
}
_MIMETYPES = {"phone": "vnd.android.cursor.item/phone_v2", "email": "vnd.android.cursor.item/email_v2",
              "address": "vnd.android.cursor.item/postal-address_v2"}

_REF = re.compile(r"^#(\d+)$")


def parse_duration(text: str) -> int | None:
    """"1 hours 30 minutes 15 seconds" / "10 min" / "90s" → seconds (None if unreadable)."""
    total, found = 0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b",
                                str(text).lower()):
        total += float(num) * {"h": 3600, "m": 60, "s": 1}[unit[0]]
        found = True
    return int(round(total)) if found else None


def _iso_to_millis(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(dt.timestamp() * 1000)  # a time without offset is taken as this machine's local time


def _bool(v) -> str:
    return "true" if v else "false"


def _has_ref(v) -> bool:
    if isinstance(v, str):
        return bool(_REF.match(v))
    if isinstance(v, list):
        return any(_has_ref(x) for x in v)
    if isinstance(v, dict):
        return any(_has_ref(x) for x in v.values())
    return False


def _resolve(v):
    """"#k" → "<resultk>" placeholder (lists/dicts recursively)."""
    if isinstance(v, str):
        m = _REF.match(v)
        return f"<result{m.group(1)}>" if m else v
    if isinstance(v, list):
        return [_resolve(x) for x in v]
    if isinstance(v, dict):
        return {k: _resolve(x) for k, x in v.items()}
    return v


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def to_adb_argv(call: dict, spec: FunctionSpec | None = None) -> tuple[list[str], list[str]]:
    """(argv after ``adb shell``, notes) for one call. Unknown functions → ([], [note])."""
    name = call.get("name")
    args = {k: _resolve(v) for k, v in (call.get("arguments") or {}).items()}
    if spec is not None:  # fill spec defaults so the command does what the function promises
        for a in spec.arguments.values():
            if a.name not in args and a.default is not None:
                args[a.name] = a.default
    notes: list[str] = []
    if name not in INTENTS:
        return [], [f"{name} is not a known DroidCall function; no Android intent"]
    it = INTENTS[name]
    argv = ["am", "start", "-a", it.action]

    def es(key, value):
        if value is not None and value != "":
            argv.extend(["--es", key, str(value)])

    def ez(key, value):
        if value is not None:
            argv.extend(["--ez", key, _bool(value)])

    if name == "ACTION_SET_ALARM":
        for arg, flag in (("EXTRA_HOUR", "--ei"), ("EXTRA_MINUTES", "--ei")):
            if args.get(arg) is not None:
                argv.extend([flag, it.extras[arg], str(args[arg])])
        es(it.extras["EXTRA_MESSAGE"], args.get("EXTRA_MESSAGE"))
        if args.get("EXTRA_DAYS"):
            days = [CALENDAR_DAYS.get(str(d).strip().lower()[:3]) for d in _as_list(args["EXTRA_DAYS"])]
            if None in days:
                notes.append(f"unknown day name in {args['EXTRA_DAYS']}")
            days = [d for d in days if d]
            if days:
                argv.extend(["--eial", it.extras["EXTRA_DAYS"], ",".join(map(str, days))])
        es(it.extras["EXTRA_RINGTONE"], args.get("EXTRA_RINGTONE"))  # "silent" = VALUE_RINGTONE_SILENT
        if args.get("EXTRA_VIBRATE"):
            ez(it.extras["EXTRA_VIBRATE"], True)
        ez(it.extras["EXTRA_SKIP_UI"], args.get("EXTRA_SKIP_UI"))
    elif name == "ACTION_SET_TIMER":
        seconds = parse_duration(args.get("duration", ""))
        if seconds is None:
            notes.append(f"cannot read a duration from {args.get('duration')!r}")
        else:
            argv.extend(["--ei", it.extras["duration"], str(seconds)])
        es(it.extras["EXTRA_MESSAGE"], args.get("EXTRA_MESSAGE"))
        ez(it.extras["EXTRA_SKIP_UI"], args.get("EXTRA_SKIP_UI"))
    elif name == "ACTION_INSERT_EVENT":
        argv.extend(["-d", "content://com.android.calendar/events"])
        for arg in ("TITLE", "DESCRIPTION", "EVENT_LOCATION"):
            es(it.extras[arg], args.get(arg))
        if args.get("EXTRA_EVENT_ALL_DAY"):
            ez(it.extras["EXTRA_EVENT_ALL_DAY"], True)
        for arg in ("EXTRA_EVENT_BEGIN_TIME", "EXTRA_EVENT_END_TIME"):
            if args.get(arg):
                ms = _iso_to_millis(args[arg])
                if ms is None:
                    notes.append(f"{arg}={args[arg]!r} is not ISO 8601; left out")
                else:
                    argv.extend(["--el", it.extras[arg], str(ms)])
        if args.get("EXTRA_EMAIL"):  # CalendarContract: comma-separated invitee list
            es(it.extras["EXTRA_EMAIL"], ",".join(map(str, _as_list(args["EXTRA_EMAIL"]))))
    elif name == "ACTION_PICK":
        kind = str(args.get("data_type", "ALL")).upper()
        if kind not in PICK_TYPES:
            notes.append(f"unknown data_type {kind!r}; picking a whole contact")
        argv.extend(["-t", PICK_TYPES.get(kind, PICK_TYPES["ALL"])])
        notes.append(it.note)
    elif name in ("get_contact_info", "get_contact_info_from_uri"):
        key = str(args.get("key", "")).lower()
        if name == "get_contact_info":
            uri, column = _CONTACT_QUERY.get(key, (None, None))
            if uri is None:
                return [], [f"unknown contact key {key!r} (phone, email, address or uri)"]
            who = str(args.get("name", "")).replace("'", "''")
            argv = ["content", "query", "--uri", uri, "--projection", column,
                    "--where", f"display_name='{who}'"]
        else:
            argv = ["content", "query", "--uri", str(args.get("contact_uri", "")).rstrip("/") + "/data",
                    "--projection", "mimetype:data1"]
            if key in _MIMETYPES:
                argv.extend(["--where", f"mimetype='{_MIMETYPES[key]}'"])
        notes.append(it.note)
    elif name == "ACTION_VIEW_CONTACT":
        argv.extend(["-d", str(args.get("contact_uri", ""))])
    elif name in ("ACTION_EDIT_CONTACT", "ACTION_INSERT_CONTACT"):
        if name == "ACTION_EDIT_CONTACT":
            argv.extend(["-d", str(args.get("contact_uri", ""))])
        else:
            argv.extend(["-t", "vnd.android.cursor.dir/contact"])
        info = args.get("contact_info") or {}
        if isinstance(info, dict):
            for k, v in info.items():
                extra = CONTACT_EXTRAS.get(str(k).lower())
                if extra is None:
                    notes.append(f"contact field {k!r} has no Insert extra; left out")
                else:
                    es(extra, v)
        if name == "ACTION_EDIT_CONTACT":
            ez("finishActivityOnSaveCompleted", True)  # return to the caller after saving
    elif name == "send_email":
        attachments = _as_list(args.get("attachments") or [])
        if attachments:  # SENDTO carries no attachments: use SEND with a stream
            argv[3] = "android.intent.action.SEND"
            argv.extend(["-t", "message/rfc822", "--eu", it.extras["attachments"], str(attachments[0])])
            if len(attachments) > 1:
                notes.append("am start cannot pass a list of Uris; only the first attachment is attached")
        else:
            argv.extend(["-d", "mailto:"])
        for arg in ("to", "cc", "bcc"):
            if args.get(arg):
                argv.extend(["--esa", it.extras[arg], ",".join(map(str, _as_list(args[arg])))])
        es(it.extras["subject"], args.get("subject"))
        es(it.extras["body"], args.get("body"))
    elif name == "send_message":
        number = re.sub(r"\s+", "", str(args.get("phone_number", "")))
        attachments = _as_list(args.get("attachments") or [])
        if attachments:  # MMS: SEND with a stream, number in "address"
            argv[3] = "android.intent.action.SEND"
            argv.extend(["-t", "*/*", "--eu", it.extras["attachments"], str(attachments[0])])
            es("address", number)
            if len(attachments) > 1:
                notes.append("am start cannot pass a list of Uris; only the first attachment is attached")
        else:
            argv.extend(["-d", f"smsto:{number}"])
        es("subject", args.get("subject"))
        es("sms_body", args.get("body"))
    elif name == "dial":
        argv.extend(["-d", "tel:" + re.sub(r"\s+", "", str(args.get("phone_number", "")))])
    elif name == "ACTION_GET_CONTENT":
        argv.extend(["-t", str(args.get("mime_type") or "*/*"), "-c", "android.intent.category.OPENABLE"])
        if args.get("allow_multiple"):
            ez(it.extras["allow_multiple"], True)
    elif name == "ACTION_OPEN_DOCUMENT":
        types = [str(t) for t in _as_list(args.get("mime_types") or ["*/*"])]
        argv.extend(["-c", "android.intent.category.OPENABLE", "-t", types[0] if len(types) == 1 else "*/*"])
        if len(types) > 1:
            argv.extend(["--esa", it.extras["mime_types"], ",".join(types)])
        if args.get("allow_multiple"):
            ez(it.extras["allow_multiple"], True)
    elif name == "ACTION_CREATE_DOCUMENT":
        argv.extend(["-c", "android.intent.category.OPENABLE", "-t", str(args.get("mime_type") or "*/*")])
        es(it.extras["initial_name"], args.get("initial_name"))
    elif name == "search_location":
        argv.extend(["-d", "geo:0,0?q=" + quote(str(args.get("query", "")))])
    elif name == "web_search":
        engine = (call.get("arguments") or {}).get("engine")
        q = str(args.get("query", ""))
        if engine:  # ACTION_WEB_SEARCH cannot choose an engine; open that engine's result page
            base = {"google": "https://www.google.com/search?q=", "baidu": "https://www.baidu.com/s?wd="}
            argv[3] = "android.intent.action.VIEW"
            argv.extend(["-d", base.get(str(engine).lower(), base["google"]) + quote(q)])
        else:
            es(it.extras["query"], q)  # SearchManager.QUERY
    elif name == "open_settings":
        kind = str(args.get("setting_type", "general")).lower()
        if kind not in SETTINGS_ACTIONS:
            notes.append(f"unknown setting_type {kind!r}; opening general settings")
        argv[3] = SETTINGS_ACTIONS.get(kind, SETTINGS_ACTIONS["general"])
    return argv, [n for n in notes if n]


def _device_quote(arg: str) -> str:
    """Quote one argument for the device's sh (single quotes unless the text has one)."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def _host_command(argv: list[str]) -> str:
    """``adb shell ...`` for a POSIX host shell. adb joins its arguments and the device shell splits
    them again, so arguments are quoted for the device and the whole command for the host."""
    device = " ".join(_device_quote(a) for a in argv)
    if device == " ".join(argv):
        return "adb shell " + device
    return 'adb shell "' + re.sub(r'(["\\$`])', r"\\\1", device) + '"'


def to_adb(call: dict, spec: FunctionSpec | None = None) -> str:
    """The adb command (one line, plus "# " note lines) for one DroidCall call."""
    argv, notes = to_adb_argv(call, spec)
    lines = [f"# {n}" for n in notes]
    if not argv:
        return "\n".join(lines)
    cmd = _host_command(argv)
    if _has_ref((call.get("arguments") or {})):
        refs = sorted(set(re.findall(r"<result(\d+)>", cmd)))
        lines.append(f"# step: fill in {', '.join(f'<result{r}>' for r in refs)} from the earlier call(s), then run:")
        cmd = "# " + cmd
    lines.append(cmd)
    return "\n".join(lines)

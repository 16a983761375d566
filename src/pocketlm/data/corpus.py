"""The built-in pre-training corpus: generated offline, deterministic, a few MB.

`pocketlm pretrain tiny` must work on any machine without a network, so the tiny recipe trains on text
this module generates from templates, a small consistent "world" (towns, people, animals, dishes) and the
seed texts shipped in ``assets/seeds``. The sources mirror PhoneLM's two-phase mix:

- ``web``   encyclopedia entries, stories, how-to guides, letters, reports (plus the seed articles)
- ``code``  small, valid Python modules: functions with docstrings and asserts, classes, scripts
- ``math``  worked arithmetic, equations, percentages, unit conversions, word problems (all correct)
- ``decay`` the higher-quality phase: instruction-style and function-calling chat transcripts rendered
            as plain text (User:/Assistant:), answered from the same world facts, plus clean prose

It is templated but varied (thousands of combinations, consistent facts), so a ~9M-parameter model's
loss falls visibly within a couple hundred steps and keeps falling for a while after.

`write_corpus(out_dir)` writes ``{source}/part-NNNNN.jsonl`` files (``{"text": ...}`` per line);
`ensure_default_dataset()` turns that into a cached tokenizer + prepared data dir in one call.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Callable

from pocketlm.data import corpus_words as words
from pocketlm.data.prepare import prepare
from pocketlm.data.shards import MANIFEST, read_manifest
from pocketlm.data.sources import SourceSpec
from pocketlm.data.tokenizer import train_tokenizer
from pocketlm.errors import UserError
from pocketlm.utils import cache_dir as pocketlm_cache_dir
from pocketlm.utils import atomic_dir

DEFAULT_SIZE_MB = 4.0
DEFAULT_VOCAB_SIZE = 4096
CORPUS_VERSION = 1  # bump when generated text changes: invalidates cached default datasets
SOURCE_SHARES = {"web": 0.55, "code": 0.15, "math": 0.15, "decay": 0.15}
# Mixture for the tiny recipe: stable phase on web/code/math, decay phase on higher-quality data.
DEFAULT_MIXTURE = {"phases": {"stable": {"web": 0.7, "code": 0.15, "math": 0.15},
                              "decay": {"decay": 0.6, "web": 0.2, "code": 0.1, "math": 0.1}}}
FILE_BYTES = 1 << 19  # split each source into ~512 KB files, so prepare can use every core


class World:
    """Facts shared by every source (same seed → same towns and people), so facts are learnable."""

    def __init__(self, seed: int):
        rng = random.Random(f"pocketlm-world-{seed}")
        names: set[str] = set()
        while len(names) < 40:
            names.add((rng.choice(words.SYLLABLES) + rng.choice(words.SYLLABLES)).capitalize()
                      + rng.choice(words.TOWN_ENDINGS))
        rivers = sorted({(rng.choice(words.SYLLABLES) + rng.choice(words.SYLLABLES)).capitalize()
                         for _ in range(20)})
        self.towns = []
        for name in sorted(names):
            self.towns.append({
                "name": name, "region": rng.choice(words.REGIONS), "river": rng.choice(rivers),
                "population": rng.choice([rng.randint(800, 9999), rng.randint(10, 999) * 1000]),
                "founded": rng.randint(800, 1950), "industry": rng.choice(words.INDUSTRIES),
                "landmark": rng.choice(words.LANDMARKS), "climate": rng.choice(words.CLIMATES),
            })
        self.people = []
        for _ in range(60):
            self.people.append({"first": rng.choice(words.FIRST_NAMES), "last": rng.choice(words.LAST_NAMES),
                                "job": rng.choice(words.JOBS), "town": rng.choice(self.towns)["name"],
                                "age": rng.randint(19, 80), "hobby": rng.choice(words.TOPICS),
                                "phone": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"})
        self.town_by_name = {t["name"]: t for t in self.towns}


def _seed_paragraphs() -> list[str]:
    """English paragraphs from the shipped seed texts (lines with enough words, mostly ASCII)."""
    out = []
    try:
        files = sorted(resources.files("pocketlm").joinpath("assets/seeds").iterdir(), key=lambda p: p.name)
    except (FileNotFoundError, ModuleNotFoundError):
        return out
    for f in files:
        if not f.name.endswith(".txt"):
            continue
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if len(line.split()) >= 12 and sum(c.isascii() for c in line) > 0.95 * len(line):
                out.append(line)
    return out


# ----------------------------------------------------------------------------------------------
# web
# ----------------------------------------------------------------------------------------------

def _num(n: int) -> str:
    return f"{n:,}"


def _town_article(rng: random.Random, w: World) -> str:
    t = rng.choice(w.towns)
    s = [f"{t['name']} is a town in {t['region']}, on the banks of the river {t['river']}."]
    facts = [
        f"It was founded in {t['founded']} and has a population of about {_num(t['population'])}.",
        f"The climate of {t['name']} is {t['climate']}.",
        f"The main industry of the town is {t['industry']}.",
        f"Visitors often come to see {t['landmark']} in the town centre.",
        f"The river {t['river']} flows through {t['name']} and later reaches the sea.",
    ]
    rng.shuffle(facts)
    s += facts[: rng.randint(3, 5)]
    locals_ = [p for p in w.people if p["town"] == t["name"]]
    if locals_:
        p = rng.choice(locals_)
        s.append(f"One of its residents, {p['first']} {p['last']}, works as a {p['job']} and enjoys {p['hobby']}.")
    title = rng.choice([t["name"], f"About {t['name']}", f"{t['name']} ({t['region']})"])
    return title + "\n\n" + " ".join(s)


def _animal_article(rng: random.Random, w: World) -> str:
    name, cls, habitat, diet, life, fact = rng.choice(words.ANIMALS)
    a = "An" if name[0] in "aeiou" else "A"
    s = [f"The {name} is a {cls} that lives in {habitat}.",
         f"Its diet consists mainly of {diet}.",
         f"{a} {name} usually lives for about {life} year{'s' if life != 1 else ''}.",
         fact]
    first = s[0]
    rest = s[1:]
    rng.shuffle(rest)
    return rng.choice([name.title(), f"The {name}", f"Facts about the {name}"]) + "\n\n" + " ".join([first] + rest)


def _story(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    q = rng.choice([x for x in w.people if x["first"] != p["first"]])
    obj = rng.choice(words.OBJECTS)
    day = rng.choice(words.WEEKDAYS)
    weather = rng.choice(words.WEATHER)
    feel1, feel2 = rng.sample(words.FEELINGS, 2)
    town = w.town_by_name[p["town"]]
    lines = [
        rng.choice([f"On a {weather} {day} morning, {p['first']} walked to the market in {town['name']}.",
                    f"It was a {weather} {day} in {town['name']}, and {p['first']} had the day off.",
                    f"{p['first']} {p['last']}, a {p['job']} from {town['name']}, woke up early on {day}."]),
        f"Near {town['landmark']}, {p['first']} found {obj}.",
        rng.choice([f"{p['first']} felt {feel1} and decided to ask {q['first']} about it.",
                    f"Feeling {feel1}, {p['first']} showed it to {q['first']}, who was passing by."]),
        rng.choice([f"\"I have seen this before,\" said {q['first']}. \"It belongs to the old {q['job']} "
                    f"by the river {town['river']}.\"",
                    f"{q['first']} looked at it for a long time and said, \"We should take it to the "
                    f"library.\""]),
        rng.choice([f"Together they returned the {obj.split(' ', 1)[1]} to its owner, and {p['first']} "
                    f"felt {feel2}.",
                    f"In the evening {p['first']} wrote about the day in a diary and felt {feel2}.",
                    f"By sunset the mystery was solved, and the two friends laughed about it."]),
    ]
    return "\n".join(lines) if rng.random() < 0.3 else " ".join(lines)


def _recipe(rng: random.Random, w: World) -> str:
    dish, ingr, method, minutes = rng.choice(words.DISHES)
    serves = rng.randint(2, 6)
    out = [f"How to make {dish}", "", f"This {dish} serves {serves} people and takes about {minutes} minutes.",
           "", "Ingredients:"]
    out += [f"- {i}" for i in ingr]
    out += ["", "Steps:"]
    steps = [f"Prepare {ingr[0]} and {ingr[1]}.", f"Add {ingr[2]} and {ingr[3]}.",
             {"simmer": f"Simmer gently for {minutes - 10} minutes, stirring now and then.",
              "fry": f"Fry in a hot pan for {max(minutes // 2, 3)} minutes.",
              "bake": f"Bake in the oven at 180 degrees for {minutes - 15} minutes.",
              "mix": "Mix everything well in a large bowl."}[method],
             f"Season with {ingr[4]} and serve."]
    out += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    return "\n".join(out)


def _letter(rng: random.Random, w: World) -> str:
    p, q = rng.sample(w.people, 2)
    t = w.town_by_name[q["town"]]
    month = rng.choice(words.MONTHS)
    body = rng.choice([
        f"I hope you are well. I will visit {t['name']} in {month} and would love to see {t['landmark']} "
        f"with you. Is the weather still {t['climate']}?",
        f"Thank you for the book about {p['hobby']}. I have read half of it already. "
        f"Next month I will start a course on {rng.choice(words.TOPICS)}.",
        f"Our meeting is moved to {rng.choice(words.WEEKDAYS)} at {rng.randint(8, 17)}:00. "
        f"Please bring the notes from last week.",
    ])
    return f"Dear {q['first']},\n\n{body}\n\nBest wishes,\n{p['first']} {p['last']}"


def _report(rng: random.Random, w: World) -> str:
    t = rng.choice(w.towns)
    hi = rng.randint(-5, 34)
    lo = hi - rng.randint(3, 12)
    cond = rng.choice(words.WEATHER)
    return (f"Weather for {t['name']}, {rng.choice(words.WEEKDAYS)} {rng.randint(1, 28)} {rng.choice(words.MONTHS)}: "
            f"{cond}, with a high of {hi} degrees and a low of {lo} degrees. "
            + rng.choice([f"Wind from the {rng.choice(['north', 'south', 'east', 'west'])} at "
                          f"{rng.randint(5, 60)} km/h.",
                          f"The chance of rain is {rng.randint(0, 100)} percent.",
                          "No changes are expected for the rest of the week."]))


def _seed_article(rng: random.Random, w: World, paras: list[str]) -> str:
    if not paras:
        return _town_article(rng, w)
    i = rng.randrange(len(paras))
    return "\n".join(paras[i:i + rng.randint(1, 3)])


# ----------------------------------------------------------------------------------------------
# code
# ----------------------------------------------------------------------------------------------

_OPS = [("add", "+", "Return the sum of a and b."), ("subtract", "-", "Return a minus b."),
        ("multiply", "*", "Return the product of a and b."), ("maximum", "max", "Return the larger of a and b."),
        ("minimum", "min", "Return the smaller of a and b.")]
_NOUNS = ["item", "value", "score", "price", "count", "word", "name", "number", "task", "point"]


def _code_function(rng: random.Random, w: World) -> str:
    name, op, doc = rng.choice(_OPS)
    a, b = rng.randint(-20, 99), rng.randint(-20, 99)
    expr = f"{op}(a, b)" if op in ("max", "min") else f"a {op} b"
    result = {"+": a + b, "-": a - b, "*": a * b, "max": max(a, b), "min": min(a, b)}[op]
    typ = rng.choice(["int", "float"])
    return (f"def {name}(a: {typ}, b: {typ}) -> {typ}:\n    \"\"\"{doc}\"\"\"\n    return {expr}\n\n\n"
            f"assert {name}({a}, {b}) == {result}\nprint({name}({a}, {b}))\n")


def _code_list(rng: random.Random, w: World) -> str:
    noun = rng.choice(_NOUNS)
    xs = [rng.randint(0, 50) for _ in range(rng.randint(3, 7))]
    kind = rng.randrange(4)
    if kind == 0:
        return (f"def total_{noun}s({noun}s):\n    total = 0\n    for {noun} in {noun}s:\n        total += {noun}\n"
                f"    return total\n\n\n{noun}s = {xs}\nprint(total_{noun}s({noun}s))  # {sum(xs)}\n")
    if kind == 1:
        k = rng.randint(5, 40)
        return (f"def {noun}s_above(values, limit):\n    \"\"\"Keep the values greater than limit.\"\"\"\n"
                f"    return [v for v in values if v > limit]\n\n\n"
                f"result = {noun}s_above({xs}, {k})\nassert result == {[x for x in xs if x > k]}\n")
    if kind == 2:
        return (f"def average(values):\n    if not values:\n        raise ValueError(\"no values\")\n"
                f"    return sum(values) / len(values)\n\n\nprint(average({xs}))  # {sum(xs) / len(xs):.2f}\n")
    return (f"{noun}s = {xs}\n{noun}s.sort()\nprint({noun}s)  # {sorted(xs)}\n"
            f"print(len({noun}s))  # {len(xs)}\n")


def _code_class(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    cls = rng.choice(["Person", "Employee", "Member", "Contact"])
    return (f"from dataclasses import dataclass\n\n\n@dataclass\nclass {cls}:\n    name: str\n    age: int\n"
            f"    job: str\n\n    def greet(self) -> str:\n        return f\"Hello, my name is {{self.name}}.\"\n\n"
            f"    def birthday(self) -> None:\n        self.age += 1\n\n\n"
            f"p = {cls}(\"{p['first']} {p['last']}\", {p['age']}, \"{p['job']}\")\np.birthday()\n"
            f"print(p.greet())\nprint(p.age)  # {p['age'] + 1}\n")


def _code_string(rng: random.Random, w: World) -> str:
    word = rng.choice(w.towns)["name"]
    kind = rng.randrange(3)
    if kind == 0:
        return (f"def reverse(text: str) -> str:\n    return text[::-1]\n\n\n"
                f"print(reverse(\"{word}\"))  # {word[::-1]}\n")
    if kind == 1:
        return (f"def count_vowels(text: str) -> int:\n    return sum(1 for c in text.lower() if c in \"aeiou\")\n\n\n"
                f"assert count_vowels(\"{word}\") == {sum(1 for c in word.lower() if c in 'aeiou')}\n")
    return (f"name = \"{word}\"\nprint(name.upper())  # {word.upper()}\nprint(len(name))  # {len(word)}\n")


def _code_loop(rng: random.Random, w: World) -> str:
    n = rng.randint(3, 12)
    kind = rng.randrange(3)
    if kind == 0:
        return (f"def factorial(n: int) -> int:\n    result = 1\n    for i in range(2, n + 1):\n"
                f"        result *= i\n    return result\n\n\nprint(factorial({n}))  # {_fact(n)}\n")
    if kind == 1:
        fib = [0, 1]
        while len(fib) < n:
            fib.append(fib[-1] + fib[-2])
        return (f"def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
                f"        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n\n\nprint(fibonacci({n}))  # {fib[:n]}\n")
    return (f"for i in range(1, {n + 1}):\n    if i % 3 == 0:\n        print(i, \"fizz\")\n    else:\n"
            f"        print(i)\n")


def _code_config(rng: random.Random, w: World) -> str:
    t = rng.choice(w.towns)
    cfg = {"town": t["name"], "population": t["population"], "founded": t["founded"], "industry": t["industry"]}
    return ("import json\n\n" f"record = {json.dumps(cfg)}\n"
            "with open(\"town.json\", \"w\") as f:\n    json.dump(record, f, indent=2)\n"
            f"print(record[\"town\"])  # {t['name']}\n")


def _fact(n: int) -> int:
    r = 1
    for i in range(2, n + 1):
        r *= i
    return r


# ----------------------------------------------------------------------------------------------
# math
# ----------------------------------------------------------------------------------------------

def _math_arith(rng: random.Random, w: World) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        op = rng.choice("+-*")
        r = {"+": a + b, "-": a - b, "*": a * b}[op]
        lines.append(f"{a} {op} {b} = {r}")
    return rng.choice(["Practice:", "Arithmetic exercises:", "Solutions:"]) + "\n" + "\n".join(lines)


def _math_equation(rng: random.Random, w: World) -> str:
    a, x, b = rng.randint(2, 12), rng.randint(-10, 20), rng.randint(1, 50)
    c = a * x + b
    return (f"Solve {a}x + {b} = {c}.\nSubtract {b} from both sides: {a}x = {c - b}.\n"
            f"Divide both sides by {a}: x = {x}.\nCheck: {a} * {x} + {b} = {c}. So x = {x}.")


def _math_word(rng: random.Random, w: World) -> str:
    p = rng.choice(w.people)
    n, k, price = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 15)
    kind = rng.randrange(3)
    if kind == 0:
        return (f"Problem: {p['first']} buys {n} apples at {price} dollars each. How much does "
                f"{p['first']} pay?\nSolution: {n} * {price} = {n * price}. {p['first']} pays {n * price} dollars.")
    if kind == 1:
        total = n * k
        return (f"Problem: {total} books are shared equally among {k} shelves. How many books are on each "
                f"shelf?\nSolution: {total} / {k} = {n}. Each shelf holds {n} books.")
    speed, hours = rng.randint(20, 90), rng.randint(2, 6)
    return (f"Problem: A train travels at {speed} km/h for {hours} hours. How far does it go?\n"
            f"Solution: distance = speed * time = {speed} * {hours} = {speed * hours} km.")


def _math_percent(rng: random.Random, w: World) -> str:
    base = rng.randint(2, 50) * 20
    pct = rng.choice([5, 10, 15, 20, 25, 50, 75])
    part = base * pct // 100
    return (f"What is {pct}% of {base}?\n{pct}% of {base} = {base} * {pct} / 100 = {part}.\n"
            f"After a discount of {pct}%, a price of {base} becomes {base} - {part} = {base - part}.")


def _math_units(rng: random.Random, w: World) -> str:
    km, h, kg = rng.randint(1, 50), rng.randint(1, 24), rng.randint(1, 20)
    return (f"Unit conversions:\n{km} km = {km * 1000} m\n{h} hours = {h * 60} minutes\n"
            f"{kg} kg = {kg * 1000} g\n{km * 100} cm = {km} m")


def _math_sequence(rng: random.Random, w: World) -> str:
    start, step = rng.randint(1, 20), rng.randint(2, 9)
    seq = [start + i * step for i in range(6)]
    return (f"The sequence {', '.join(map(str, seq[:5]))}, ... increases by {step} each time. "
            f"The next term is {seq[5]}. The n-th term is {start} + (n - 1) * {step}.")


# ----------------------------------------------------------------------------------------------
# decay: instruction and function-calling transcripts as plain text
# ----------------------------------------------------------------------------------------------

def _chat(turns: list[tuple[str, str]], system: str | None = None) -> str:
    out = [f"System: {system}"] if system else []
    out += [f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in turns]
    return "\n".join(out)


def _qa_fact(rng: random.Random, w: World) -> str:
    t = rng.choice(w.towns)
    q, a = rng.choice([
        (f"Where is {t['name']}?", f"{t['name']} is in {t['region']}, on the river {t['river']}."),
        (f"How many people live in {t['name']}?", f"About {_num(t['population'])} people live in {t['name']}."),
        (f"When was {t['name']} founded?", f"{t['name']} was founded in {t['founded']}."),
        (f"What is {t['name']} known for?",
         f"{t['name']} is known for {t['industry']} and for {t['landmark']}."),
        (f"What is the weather like in {t['name']}?", f"The climate of {t['name']} is {t['climate']}."),
    ])
    return _chat([("user", q), ("assistant", a)], system="You are a helpful assistant.")


def _qa_animal(rng: random.Random, w: World) -> str:
    name, cls, habitat, diet, life, fact = rng.choice(words.ANIMALS)
    turns = [("user", f"Tell me about the {name}."),
             ("assistant", f"The {name} is a {cls} that lives in {habitat} and eats {diet}. {fact}")]
    if rng.random() < 0.5:
        turns += [("user", "How long does it live?"),
                  ("assistant", f"It usually lives for about {life} year{'s' if life != 1 else ''}.")]
    return _chat(turns, system="You are a helpful assistant.")


def _qa_math(rng: random.Random, w: World) -> str:
    body = rng.choice([_math_equation, _math_word, _math_percent])(rng, w)
    q, _, a = body.partition("\n")
    return _chat([("user", q.removeprefix("Problem: ")), ("assistant", a.replace("Solution: ", ""))])


def _qa_code(rng: random.Random, w: World) -> str:
    gen = rng.choice([_code_function, _code_loop, _code_string])
    code = gen(rng, w)
    first = code.split("\n", 1)[0]
    ask = f"Write a Python function like `{first.rstrip(':')}` and show how to use it."
    return _chat([("user", ask), ("assistant", f"Here is one way to do it:\n```python\n{code}```")])


def _qa_rewrite(rng: random.Random, w: World) -> str:
    story = _story(rng, w).replace("\n", " ")
    first = story.split(". ")[0].rstrip(".") + "."
    return _chat([("user", f"Summarize this story in one sentence: {story}"),
                  ("assistant", f"In short: {first}")])


_FC_SYSTEM = "You are an expert in composing functions."


def _fc_docs(names: list[str], api: dict[str, dict]) -> str:
    lines = []
    for n in names:
        spec = api[n]
        args = ", ".join(f"{a}: {v['type']}" for a, v in spec["arguments"].items())
        desc = spec["description"].strip().split("\n")[0]
        lines.append(f"Name: {n}\nDescription: {desc}\nArgs: {args or 'none'}")
    return "\n\n".join(lines)


def _fc_call(rng: random.Random, w: World, api: dict[str, dict]) -> str:
    p = rng.choice(w.people)
    who = f"{p['first']} {p['last']}"
    h, m = rng.randint(5, 22), rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])
    ampm = f"{(h - 1) % 12 + 1}:{m:02d} {'am' if h < 12 else 'pm'}"
    topic = rng.choice(words.TOPICS)
    town = rng.choice(w.towns)["name"]
    mins = rng.randint(1, 59)
    setting = rng.choice(["wifi", "bluetooth", "display", "location", "security", "date"])
    cases = [
        (f"Wake me up at {ampm}.", ["ACTION_SET_ALARM"], [f"ACTION_SET_ALARM(EXTRA_HOUR={h}, EXTRA_MINUTES={m})"]),
        (f"Set an alarm for {ampm} called {topic}.", ["ACTION_SET_ALARM"],
         [f"ACTION_SET_ALARM(EXTRA_HOUR={h}, EXTRA_MINUTES={m}, EXTRA_MESSAGE=\"{topic}\")"]),
        (f"Start a timer for {mins} minutes.", ["ACTION_SET_TIMER"],
         [f"ACTION_SET_TIMER(duration=\"{mins} minutes\")"]),
        (f"Call {p['phone']}.", ["dial"], [f"dial(phone_number=\"{p['phone']}\")"]),
        (f"Search the web for {topic} clubs in {town}.", ["web_search"],
         [f"web_search(query=\"{topic} clubs in {town}\")"]),
        (f"Show me {town} on the map.", ["search_location"], [f"search_location(query=\"{town}\")"]),
        (f"Open the {setting} settings.", ["open_settings"], [f"open_settings(setting_type=\"{setting}\")"]),
        (f"Text {p['phone']} that I will be late.", ["send_message"],
         [f"send_message(phone_number=\"{p['phone']}\", subject=\"\", body=\"I will be late.\")"]),
        (f"Call {who}.", ["get_contact_info", "dial"],
         [f"get_contact_info(name=\"{who}\", key=\"phone\")", "dial(phone_number=\"#0\")"]),
        (f"Email {who} about the {topic} meeting.", ["get_contact_info", "send_email"],
         [f"get_contact_info(name=\"{who}\", key=\"email\")",
          f"send_email(to=[\"#0\"], subject=\"{topic.capitalize()} meeting\", body=\"About our {topic} meeting.\")"]),
        ("Take a photo.", ["ACTION_IMAGE_CAPTURE"], ["ACTION_IMAGE_CAPTURE()"]),
    ]
    query, gold, calls = rng.choice(cases)
    gold = [g for g in gold if g in api]
    pool = [n for n in sorted(api) if n not in gold]
    names = gold + rng.sample(pool, max(0, 4 - len(gold)))
    rng.shuffle(names)
    answer = "\n".join(f"result{i} = {c}" for i, c in enumerate(calls))
    user = f"Here are some functions:\n\n{_fc_docs(names, api)}\n\nNow my query is: {query}"
    return _chat([("user", user), ("assistant", answer)], system=_FC_SYSTEM)


def _load_api() -> dict[str, dict]:
    try:
        text = resources.files("pocketlm").joinpath("assets/droidcall/api.jsonl").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    api = {}
    for line in text.splitlines():
        if line.strip():
            d = json.loads(line)
            api[d["name"]] = d
    return api


# ----------------------------------------------------------------------------------------------
# Putting it together
# ----------------------------------------------------------------------------------------------

def _generators(w: World) -> dict[str, list[tuple[float, Callable]]]:
    paras = _seed_paragraphs()
    api = _load_api()
    seed_art = lambda rng, w: _seed_article(rng, w, paras)  # noqa: E731
    fc = (lambda rng, w: _fc_call(rng, w, api)) if api else _qa_fact
    return {
        "web": [(3, _town_article), (2, _animal_article), (4, _story), (1.5, _recipe), (1.5, _letter),
                (1.5, _report), (0.5, seed_art)],
        "code": [(2, _code_function), (2, _code_list), (1, _code_class), (1.5, _code_string),
                 (1.5, _code_loop), (1, _code_config)],
        "math": [(2, _math_arith), (2, _math_equation), (2, _math_word), (1, _math_percent),
                 (1, _math_units), (1, _math_sequence)],
        "decay": [(2, _qa_fact), (1.5, _qa_animal), (1.5, _qa_math), (1, _qa_code), (1, _qa_rewrite),
                  (2, fc), (1, _town_article), (0.5, seed_art)],
    }


def generate_documents(source: str, n_bytes: int, seed: int = 0, world: World | None = None):
    """Yield documents of one source until about ``n_bytes`` of UTF-8 text; deterministic in seed."""
    w = world or World(seed)
    gens = _generators(w)
    if source not in gens:
        raise UserError(f"unknown corpus source {source!r} (have: {', '.join(gens)})")
    weights, fns = zip(*gens[source])
    rng = random.Random(f"pocketlm-corpus-{seed}-{source}")
    done = 0
    while done < n_bytes:
        doc = rng.choices(fns, weights=weights)[0](rng, w)
        # Some documents bundle a few items, so documents vary in length (as real data does).
        while rng.random() < 0.35:
            doc += "\n\n" + rng.choices(fns, weights=weights)[0](rng, w)
        done += len(doc.encode("utf-8")) + 1
        yield doc


def write_corpus(out_dir: str | os.PathLike, size_mb: float = DEFAULT_SIZE_MB, seed: int = 0,
                 shares: dict[str, float] | None = None) -> dict[str, Path]:
    """Write the corpus as ``out_dir/{source}/part-NNNNN.jsonl``; returns {source: dir}. Atomic per source."""
    if not (size_mb > 0):
        raise UserError(f"size_mb must be positive, got {size_mb}")
    shares = shares or SOURCE_SHARES
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = World(seed)
    paths = {}
    for source, share in shares.items():
        with atomic_dir(out / source) as tmp:
            part, size, f = 0, 0, None
            try:
                for doc in generate_documents(source, int(size_mb * share * 1e6), seed, w):
                    if f is None or size >= FILE_BYTES:
                        if f:
                            f.close()
                        f = open(tmp / f"part-{part:05d}.jsonl", "w", encoding="utf-8")
                        part, size = part + 1, 0
                    line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
                    f.write(line)
                    size += len(line)
            finally:
                if f:
                    f.close()
        paths[source] = out / source
    return paths


def ensure_default_dataset(cache_dir: str | os.PathLike | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE,
                           size_mb: float = DEFAULT_SIZE_MB, seed: int = 0, workers: int | None = None) -> Path:
    """The built-in corpus, tokenized and prepared, built once and cached; returns the data dir.

    The data dir has ``manifest.json`` (sources web, code, math, decay; see `DEFAULT_MIXTURE`) and
    its tokenizer in ``tokenizer/``. Safe to call from several processes at once (file lock).
    """
    root = Path(cache_dir) if cache_dir else pocketlm_cache_dir() / "default-data"
    key = f"v{CORPUS_VERSION}-seed{seed}-{size_mb:g}mb-vocab{vocab_size}"
    data_dir = root / key
    if (data_dir / MANIFEST).is_file():
        return data_dir
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same dataset
        if (data_dir / MANIFEST).is_file():
            return data_dir
        t0 = time.time()
        print(f"building the default dataset ({size_mb:g} MB corpus, vocab {vocab_size}) in {data_dir}",
              file=sys.stderr)
        work = root / f".{key}.work"
        corpus = write_corpus(work / "corpus", size_mb=size_mb, seed=seed)
        tok_dir = train_tokenizer([Path(p) for p in corpus.values()], vocab_size, work / "tokenizer")
        prepare([SourceSpec(name, paths=[str(p)]) for name, p in corpus.items()], tok_dir, data_dir,
                workers=workers, val_fraction=0.02)
        read_manifest(data_dir)
        shutil.rmtree(work, ignore_errors=True)
        print(f"default dataset ready in {time.time() - t0:.1f}s: {data_dir}", file=sys.stderr)
    return data_dir

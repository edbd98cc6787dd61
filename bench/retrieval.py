"""Retrieval benchmark: `search.search` over ~100,000 chunks, with and without access lists.

Search runs before every grounded turn, so on a large knowledge base it must stay fast
(target: p95 <= 25 ms), find the right article, and never return a chunk the requester may
not read. This measures what the product runs and nothing else. By hand, from the project
root (it is not a test; about a minute on 2 CPUs, most of it ingest):

    .venv/bin/python bench/retrieval.py [--chunks 100000] [--queries 120] [--rounds 1]

In a fresh `parley_bench_<random>` database (on DATABASE_URL's server, else an embedded
PostgreSQL; dropped at the end, also on an error, Ctrl-C or SIGTERM) it ingests the demo
documents and generated help-center articles through `documents.upsert_document` (most
public; some restricted to users or groups; a few in a second organization), runs
`analyze chunks` as `parley ingest` does, then reports:

  latency   p50/p95/p99 of `search.search(..., limit=3)` with and without rerank, for a
            reader of everything (`search._SEARCH` with its access predicate replaced by
            `true`), an anonymous requester and a user with groups; a verdict on the target
  recall@3  over the labelled questions of `bench/retrieval_questions.json`
  ACL       hits returned to requesters who may not read them (must be 0)
"""

# ruff: noqa: E402  (the project root goes on sys.path before the project's imports)

from __future__ import annotations

import sys
from pathlib import Path

from parley.storage.db import Conn, Pool

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from unittest import mock

import psycopg
from psycopg import conninfo, sql

from parley.knowledge import access as knowledge_access
from parley.knowledge import documents, search
from parley.knowledge.chunking import chunk_text, extract
from parley.knowledge.types import Access, Document, Hit, Requester
from parley.storage.db import create_pool, migrate

# ============================================================================ the corpus
#
# Support articles about a catalogue of made-up products (brand, line name, model number,
# category). Each product gets 6 articles of different kinds (setup, a feature, a symptom,
# warranty, ...), each an intro and 4 `##` sections: a few sentences specific to the
# section plus generic support boilerplate. So common words (order, app, battery, warranty,
# reset, ...) match many chunks while line names, features, parts and error codes match
# few, as in a real help center. Document `i` depends only on SEED and `i` (never on how
# many are generated), so the labelled questions point at the same articles at any size.

SEED = 20240611
DOCS_PER_PRODUCT = 6

# fmt: off
BRANDS = [
    "Nordel", "Aurelia", "Kestrel", "Brightway", "Hollis", "Tamarack", "Solenne", "Verano",
    "Quaystone", "Larkspur", "Ferrow", "Oakhaven", "Myrtle", "Calloway", "Penrose", "Dunmore",
    "Arvika", "Belmont", "Cedarline", "Halvard", "Ingleby", "Juniper", "Kinross", "Lowell",
]
SYL_A = [  # line names: SYL_A x SYL_B gives 3000 made-up words ("Velto", "Kasix", ...)
    "Vel", "Mor", "Kas", "Tiv", "Zen", "Lum", "Cor", "Bri", "Nox", "Pel", "Dra", "Fen", "Gal",
    "Hal", "Jor", "Kel", "Lir", "Mav", "Nor", "Orn", "Pax", "Quil", "Ros", "Sal", "Tor", "Ulm",
    "Var", "Wyn", "Xen", "Yar", "Zor", "Ast", "Bel", "Cyr", "Dun", "Eld", "Fal", "Gor", "Hex",
    "Ivo", "Jax", "Kor", "Lyn", "Mir", "Nel", "Oxa", "Pim", "Rax", "Sev", "Tam",
]
SYL_B = [
    "to", "ra", "ix", "en", "ar", "is", "on", "ex", "ia", "us", "ent", "ora", "ani", "elo",
    "ium", "ova", "ade", "ine", "yx", "oth", "ant", "ero", "ika", "ulo", "eon", "ari", "ost",
    "una", "ilo", "ett", "amo", "eli", "ondo", "ura", "evi", "oxa", "ibo", "adi", "erru",
    "olo", "ymi", "azu", "equa", "ivo", "onte", "arra", "ello", "issa", "undo", "emo", "aly",
    "ecto", "iru", "osca", "upa", "erra", "anza", "ilia", "otta", "yra",
]
COMMON_TERMS = [  # what random queries draw most
    "order", "account", "app", "device", "settings", "warranty", "return", "refund", "battery",
    "update", "reset", "support", "delivery", "payment", "subscription", "charge", "light",
    "button", "error", "replacement", "repair", "cable", "filter", "power", "screen", "noise",
    "connection", "wifi", "password", "invoice", "serial number", "receipt", "firmware",
    "cleaning", "schedule", "notification", "manual", "store", "customer", "days", "months",
]
# fmt: on
ACTIONS = ["reset", "restart", "re-pair", "update", "recalibrate", "unplug", "clean", "register"]
COLOURS = ["graphite", "chalk white", "sage green", "midnight blue", "sand", "coral red"]

# The text tables below are wrapped: a line indented by two spaces continues the one above.
# Categories: "name: parts | features | symptoms" (a `*` marks one without app or firmware).
_CATEGORIES = """
kettle*: limescale filter, lid hinge, base plate, power cord | keep-warm mode, temperature presets,
  descaling reminder, boil-dry protection, child lock, quiet boil | does not switch on, leaks from
  the base, switches off before boiling, makes a loud rumbling noise, shows a blinking red light
wireless headphones: ear cushions, charging case, headband padding, USB-C cable | noise
  cancellation, transparency mode, multipoint pairing, spatial audio, equalizer, wear detection |
  keep disconnecting, sound only in one ear, will not charge, have a crackling sound, microphone
  sounds muffled
mesh router: satellite node, power adapter, ethernet cable, wall mount | guest network, parental
  controls, port forwarding, band steering, WPA3 security, VPN passthrough | keeps dropping the
  connection, has slow speeds upstairs, shows an orange light, will not accept the password,
  restarts by itself
robot vacuum: side brush, main roller, dust bin filter, mop pad | no-go zones, carpet boost,
  scheduled cleaning, room mapping, mopping mode, auto-empty station | gets stuck under furniture,
  does not return to the dock, leaves dirt behind, loses its map, makes a grinding noise
smart thermostat: wall plate, temperature sensor, trim kit, backup battery | eco schedule,
  geofencing, heat pump balance, open window detection, humidity control, holiday mode | shows the
  wrong temperature, does not turn the heating on, loses wifi, has a blank screen, clicks repeatedly
espresso machine*: portafilter, water tank, drip tray, steam wand tip | milk frother, grind size,
  pre-infusion, cup warmer, double shot, auto rinse | drips slowly, makes weak coffee, leaks water
  underneath, shows a descale warning, does not heat up
e-bike: battery pack, brake pads, chain, charger | pedal assist levels, walk mode, regenerative
  braking, range estimate, anti-theft alarm, headlight sensor | motor cuts out, battery drains fast,
  display shows error, makes a clicking noise when pedalling, will not power on
security camera: mounting bracket, solar panel, microSD card, weather housing | motion zones, night
  vision, two-way talk, person detection, privacy mask, local storage | goes offline, sends too many
  alerts, has a blurry image, records no sound, shows a solid red light
smartwatch: strap, charging puck, screen protector, buckle | sleep tracking, heart rate alerts,
  contactless payments, fall detection, GPS workouts, always-on display | drains battery overnight,
  stops counting steps, will not sync, has an unresponsive touchscreen, vibrates randomly
laser printer: toner cartridge, drum unit, fuser, pickup roller | duplex printing, toner saver, scan
  to email, mobile printing, secure print, paper tray selection | jams paper, prints faded pages,
  shows offline, leaves streaks on the page, prints blank pages
bluetooth speaker: carry strap, charging cable, rubber feet, grille | party mode, stereo pairing,
  bass boost, outdoor mode, voice assistant, power bank output | cuts out at high volume, will not
  pair, does not charge, makes a buzzing sound, turns off by itself
air purifier: HEPA filter, carbon prefilter, fan motor, sensor cover | auto mode, sleep mode, air
  quality indicator, filter life tracking, fan speed, ionizer | smells musty, runs loud, shows the
  filter light, does not turn on, reads poor air quality constantly
electric toothbrush: brush head, charging stand, travel case, handle seal | pressure sensor,
  brushing modes, two-minute timer, travel lock, whitening mode, app coaching | does not hold a
  charge, vibrates weakly, has a flashing battery light, makes a rattling sound, stops mid-cycle
standing desk*: control box, leg motor, keypad, crossbar | memory presets, collision detection,
  sit-stand reminders, keypad lock, cable management, height limits | wobbles at full height, only
  moves in one direction, shows error E08, moves unevenly, beeps continuously
camera drone: propellers, flight battery, gimbal cover, remote controller | return to home, obstacle
  avoidance, follow mode, geofence limits, hyperlapse, gimbal lock | drifts while hovering, loses
  video signal, will not take off, has a short flight time, shows a compass error
e-reader: cover case, charging cable, screen, stylus | warm light, dark mode, page refresh, library
  loans, text-to-speech, waterproof mode | freezes on a page, does not download books, has ghosting
  on the screen, will not turn on, drains battery quickly
dishwasher*: cutlery basket, spray arm, drain filter, door seal | eco program, half load, delayed
  start, auto door open, rinse aid dosing, intensive zone | leaves dishes wet, does not drain, shows
  error E15, leaves white residue, will not start
baby monitor: parent unit, camera stand, wall mount kit, power adapter | cry detection, room
  temperature alerts, lullabies, night light, two-way audio, breathing monitor | loses the
  connection, has a delayed picture, beeps out of range, drains the parent unit, shows static
smart lock: keypad, battery cover, door sensor, mounting plate | auto-lock, guest codes, fingerprint
  unlock, door sense, activity log, remote unlock | jams while locking, does not recognise
  fingerprints, drains batteries quickly, beeps three times, goes offline
treadmill: running belt, safety key, motor belt, deck lubricant | incline control, interval
  programs, heart rate zones, auto stop clip, folding lock, speed presets | belt slips, makes a
  thumping noise, stops suddenly, console is blank, incline will not change
air fryer: basket, crisper plate, heating element, door handle | preheat, shake reminder, dual zone,
  dehydrate program, keep warm, recipe sync | smokes while cooking, cooks unevenly, fan is noisy,
  does not heat, basket sticks
portable projector: remote, lens cap, tripod mount, power brick | keystone correction, auto focus,
  screen mirroring, eye protection, low latency mode, battery mode | has a blurry picture,
  overheats, has no sound, will not mirror, shows a dim image
"""

# Placeholders: P product ("Nordel Velto 5 kettle"), S short name ("Velto 5"), L line,
# B brand, C category, APP, T the article's topic (feature, symptom or part); drawn per use:
# F / F2 a feature (F2 not the topic), PART, ACT, N, SEC, MIN, VER, COLOUR, YEAR, PRICE;
# per article: ERR error code, MONTHS warranty, DAYS return period.
INTROS = [
    "This article covers the {P} (all colours, including {COLOUR}).",
    "Applies to every {S} sold since {YEAR}.",
    "Everything you need to know, for owners of the {B} {S}.",
    "Written for the {P}; other {C} models work in a similar way.",
]
# "# kind", then its sections: "## heading" and the sentences specific to it.
# Article kinds, "# kind | titles", each with 4 sections: "## heading | its own sentences".
_SECTIONS = """
# setup | Setting up your {P} | Getting started with the {P} | {P}: first-time setup
## Before you start | Unpack the {C} and remove all protective film and transport locks. Charge the
  battery fully before first use; this takes about {N} hours. Download the {APP} and sign in to your
  account, or create one.
## Connecting to the app | Open the {APP}, tap Add device and choose {C} from the list. Hold the
  power button for {SEC} seconds until the light blinks blue, then enter your wifi password. The {S}
  appears under My devices once pairing succeeds; if it times out, move the phone closer.
## First use | Run the first cycle without load so the sensors can calibrate. The app suggests
  default settings for the {F}; you can change them later. The status light turns solid white when
  the {S} is ready.
## Registering your product | Register the {S} within {DAYS} days to activate the extended warranty.
  Registration asks for the serial number, the date of purchase and the store. You can register in
  the app or on our website under My products.
# feature | Using {T} on the {P} | {P}: how {T} works | {T} on your {P}
## What {T} does | With {T} enabled, the {C} adapts its behaviour automatically. {T} was added in
  firmware version {VER} and is available on all {L} units. Unlike the {F2}, {T} works without an
  internet connection once configured.
## Turning {T} on or off | In the {APP}, open the {S}, tap Settings and then {T}. On the device
  itself, press and hold the mode button for {SEC} seconds. A short tone confirms that {T} is
  active; turning it off restores the factory behaviour.
## Adjusting {T} settings | You can fine-tune {T} with the slider from level 1 to {N}; higher levels
  use more power. Settings for {T} are stored per user profile. A schedule lets {T} run only at
  certain times of day.
## Known limitations | {T} is not available while the {F2} is running. In some regions {T} is
  limited by local regulations. Third-party accessories can interfere with {T}.
# symptom | {P} {T} | Troubleshooting: {P} {T} | What to do if your {P} {T}
## Quick checks | Check that the {C} is plugged in and the outlet works with another device. Make
  sure the {PART} is seated correctly and not damaged. Restart the {S} by holding the power button
  for {SEC} seconds.
## Why it happens | When a {S} {T}, the cause is usually the {PART} or an outdated firmware. In most
  reports where the {C} {T}, a reset fixed the problem. A weak wifi signal or a non-original charger
  can make the unit behave erratically.
## Error code {ERR} | Error {ERR} on the {S} means the self-test failed. If {ERR} appears
  repeatedly, note when it happens and contact support. A soft reset clears {ERR}: unplug the {C}
  for {MIN} minutes; a factory reset erases all settings.
## When to contact support | If the {C} still {T} after these steps, contact support with your order
  number. Units within the {MONTHS}-month warranty are repaired or replaced free of charge. Outside
  the warranty we offer a paid repair with a fixed price.
# warranty | {P} warranty and returns | Warranty for the {P}
## Warranty period | The {S} comes with a {MONTHS}-month manufacturer warranty. The warranty starts
  on the date of delivery shown on your receipt. Batteries are covered for {N}00 charge cycles or
  the warranty period.
## What is covered | The warranty covers manufacturing defects; a defective {PART} is replaced.
  Accidental damage, drops and liquid damage are not covered. Normal wear of the {PART} is not a
  defect.
## Making a claim | Start a claim in the {APP} under My products, then Warranty. Describe the fault
  and attach a photo or video. We reply within {N} business days with a repair or replacement offer.
## Returns within {DAYS} days | You can return the {S} within {DAYS} days of delivery for a full
  refund. Returned items must be complete and in their original packaging. The refund goes to the
  original payment method once we receive the item.
# firmware | Updating the {P} firmware | {P} firmware updates
## Why update | Firmware {VER} for the {S} improves the {F} and fixes connection issues. Updates
  bring security fixes and new features to your {C}. Some app features need the latest firmware on
  the device.
## Checking your version | Open the {APP}, select the {S} and tap About. The installed firmware
  version is shown next to the serial number. If a newer version exists, a banner offers the update.
## Installing an update | Keep the {C} plugged in or above {N}0 percent battery during the update.
  The device restarts once or twice while the update installs. Automatic updates can be enabled
  under Settings, Firmware.
## If the update fails | If the update stops, restart the {S} and try again. An update that fails
  twice can be installed from a computer with a USB cable. Error {ERR} during an update means the
  download was incomplete.
# cleaning | Cleaning the {P} | {P}: cleaning and care
## How often to clean | Clean the {S} every {N} weeks, or more often with heavy use. The app reminds
  you when cleaning is due. Regular cleaning keeps the {F} working as intended.
## Cleaning the {T} | Switch off and unplug the {C} before you clean the {T}. Remove the {T}, rinse
  it under lukewarm water and let it dry for {N} hours. A soft brush helps to remove dust from the
  {T}.
## Products to avoid | Never use bleach, solvents or abrasive sponges on the {C}. Alcohol wipes can
  damage the coating of the {S}. Use only a dry or slightly damp cloth on the electronics.
## Storage | Store the {C} in a dry place between 5 and 35 degrees. If you do not use the {S} for a
  long time, charge the battery to half first. Keep the original box for storage and transport.
# part | Replacing the {T} of the {P} | {P}: replacement {T}
## Ordering a replacement {T} | A replacement {T} for the {S} costs {PRICE} EUR in our online store.
  Choose the {T} that matches your model number, printed under the {C}. Customers on a care plan
  receive one {T} per year free of charge.
## Removing the old {T} | Switch the {C} off and disconnect it from power. Press the release tab and
  pull the {T} gently towards you. If the {T} is stuck, do not use tools; contact support instead.
## Fitting the new {T} | Slide the new {T} in until it clicks. The {APP} resets the {T} counter when
  you confirm the replacement. Run a short test cycle to check that the {T} sits correctly.
## Disposal and recycling | Old parts can be returned to any of our stores for recycling. Batteries
  and electronic parts must not go in household waste. We send a free recycling label with every
  replacement {T} order.
# specs | {P} technical specifications | {P}: specifications
## Dimensions and weight | The {S} measures {N}2 by {N}4 by {N}1 centimetres. It weighs {N}.{N}
  kilograms without accessories. It is available in {COLOUR} and two other colours.
## Power and battery | Input: 100 to 240 volts, 50 or 60 hertz. The battery lasts up to {N}0 hours
  and charges in {N} hours. Standby power use is below 0.5 watts.
## Connectivity | Wifi 2.4 GHz and Bluetooth 5.{N}; works with the major voice assistants. The {APP}
  works with current versions of iOS and Android.
## In the box | The {S}, the {PART}, a USB-C cable and the quick start guide. A power adapter is
  included in EU and UK packages.
# care plan | {B} Care plan for the {P} | Protecting your {P} with {B} Care
## Plans | {B} Care for the {S} costs {PRICE} EUR per year. Care adds accidental damage cover and
  express replacement. Plans can be bought within {DAYS} days of delivery.
## Billing | The plan renews every year and is charged to the card on file. An invoice is emailed
  after each payment; you can switch to monthly billing in your account.
## Cancelling | Cancel the plan at any time in your account under Subscriptions. If you cancel
  within {DAYS} days you get a full refund; after that, the refund is pro rata.
## Transferring the plan | If you sell the {S}, the plan can be transferred to the new owner. The
  transfer is free and takes effect once the new owner accepts it.
"""
# Boilerplate: each section gets a few of these sentences (common words in many chunks).
_FILLER = """
Keep your order number and the serial number of the {C} at hand when you contact us. The serial
number is printed on a label underneath the {C} and on the original box. Most questions are answered
faster in the {APP} than by email. If you bought the {S} from a retailer, keep the receipt: it is
your proof of purchase. Support is available by chat seven days a week and by phone on business
days. Refunds and replacements are handled by the store where you placed the order. The {F} can be
switched off at any time in the settings. A short video of this step is available in the {APP} under
Help. Do not open the housing yourself: it voids the warranty. Older units sold before {YEAR} may
show slightly different menus. Your account shows every product you registered and its warranty
status. This usually takes less than {MIN} minutes. Write down your current settings first if you
want to restore them later. Customers on a care plan get a replacement shipped before they send the
old unit back. Changes made in the app sync to the {C} within a few seconds. The {PART} is sold
separately in our online store. Our community forum has tips from other {L} owners. If the light on
the {C} blinks orange, the battery is low. Business customers can request an invoice with their VAT
number. The {APP} is free and does not require a subscription. Firmware updates never delete your
saved settings. For safety reasons, use only the original charger and cable. Technicians may ask you
to {ACT} the device during a call. Repairs outside the warranty are quoted before any work starts.
Settings you change are saved on the device and restored after a restart. We recommend checking for
updates once a month. If a notification does not appear, check that notifications are allowed for
the app. The manual that came in the box covers the same steps with drawings. Photos of the rating
label help our team identify the exact model. Accessories from other brands may fit but are not
tested with the {S}. Unplug the {C} during thunderstorms. Orders placed on our website can be
tracked in your account. Some features depend on your region and language settings.
"""

_SENTENCE = re.compile(r"(?<=[.!?]) (?=[A-Z{])")


@dataclass(frozen=True)
class Category:
    name: str
    parts: list[str]
    features: list[str]
    symptoms: list[str]
    connected: bool  # has an app and firmware


def _entries(table: str) -> list[str]:
    entries: list[str] = []
    for ln in table.strip().splitlines():
        if ln.startswith("  "):
            entries[-1] += " " + ln.strip()
        else:
            entries.append(ln)
    return entries


def _category(entry: str) -> Category:
    head, features, symptoms = entry.split(" | ")
    name, parts = head.split(": ")
    lists = [text.split(", ") for text in (parts, features, symptoms)]
    return Category(name.rstrip("*"), *lists, connected=not name.endswith("*"))


def _kinds() -> dict[str, tuple[list[str], list[tuple[str, list[str]]]]]:
    """kind -> (titles, sections: (heading, sentences))."""
    kinds: dict[str, tuple[list[str], list[tuple[str, list[str]]]]] = {}
    for entry in _entries(_SECTIONS):
        if entry.startswith("## "):
            heading, text = entry[3:].split(" | ")
            kinds[list(kinds)[-1]][1].append((heading, _SENTENCE.split(text)))
        else:
            kind, *titles = entry.removeprefix("# ").split(" | ")
            kinds[kind] = (titles, [])
    return kinds


CATEGORIES = [_category(entry) for entry in _entries(_CATEGORIES)]
KINDS = _kinds()
FILLER = _SENTENCE.split(" ".join(_FILLER.split()))
_LINE_ORDER = list(range(len(SYL_A) * len(SYL_B)))
random.Random(SEED).shuffle(_LINE_ORDER)


def line_name(product: int) -> str:
    lap, k = divmod(product, len(_LINE_ORDER))
    word = SYL_A[_LINE_ORDER[k] // len(SYL_B)] + SYL_B[_LINE_ORDER[k] % len(SYL_B)]
    return word + ("" if lap == 0 else "ABCDEFGHJK"[lap % 10])


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


class _Facts(dict):
    """Placeholder values: fixed ones are stored, the others drawn afresh on each use."""

    def __init__(self, r: random.Random, cat: Category, fixed: dict[str, str]) -> None:
        super().__init__(fixed)
        self.draw = {
            "F": lambda: r.choice(cat.features),
            "F2": lambda: r.choice([f for f in cat.features if f != fixed["T"]]),
            "PART": lambda: r.choice(cat.parts),
            "ACT": lambda: r.choice(ACTIONS),
            "N": lambda: str(r.randint(2, 9)),
            "SEC": lambda: str(r.choice([5, 10, 15, 20, 30])),
            "MIN": lambda: str(r.choice([2, 5, 10, 15, 30])),
            "VER": lambda: f"{r.randint(1, 6)}.{r.randint(0, 19)}",
            "COLOUR": lambda: r.choice(COLOURS),
            "YEAR": lambda: str(r.randint(2019, 2025)),
            "PRICE": lambda: f"{r.randint(3, 49)}.{r.choice(['00', '50', '90', '99'])}",
        }

    def __missing__(self, key: str) -> str:
        return self.draw[key]()

    def fill(self, template: str) -> str:
        text = template.format_map(self)
        return text[:1].upper() + text[1:]


def generate(index: int) -> tuple[str, str, str]:
    """Generated article `index`: (document id, title, Markdown text)."""
    product, nth = divmod(index, DOCS_PER_PRODUCT)
    prng = random.Random(f"{SEED}/product/{product}")
    cat, brand, model = prng.choice(CATEGORIES), prng.choice(BRANDS), prng.randint(2, 9)
    kinds = ["setup", "feature", "feature", "symptom", "symptom", "warranty", "cleaning"]
    kinds += ["part", "specs", "care plan"] + (["firmware"] if cat.connected else [])
    prng.shuffle(kinds)
    kinds = kinds[:DOCS_PER_PRODUCT]
    topics = {  # a product's two feature (symptom) articles cover different ones
        "feature": prng.sample(cat.features, 2),
        "symptom": prng.sample(cat.symptoms, 2),
        "part": [prng.choice(cat.parts)],
        "cleaning": [prng.choice(cat.parts)],
    }
    kind, line = kinds[nth], line_name(product)
    topic = topics[kind][kinds[:nth].count(kind)] if kind in topics else ""
    rng = random.Random(f"{SEED}/doc/{index}")
    err = f"{rng.choice('EFHPC')}{rng.randint(10, 99)}"  # a labelled question names one
    months, days = str(rng.choice([12, 24, 24, 36])), str(rng.choice([14, 30, 30, 60]))
    product_name, short = f"{brand} {line} {model} {cat.name}", f"{line} {model}"
    fixed = {"P": product_name, "S": short, "L": line, "B": brand, "C": cat.name, "T": topic}
    w = _Facts(
        rng, cat, fixed | {"APP": f"{brand} Home app", "ERR": err, "MONTHS": months, "DAYS": days}
    )

    def filler() -> str:
        return w.fill(rng.choice(FILLER))

    titles, sections = KINDS[kind]
    title = w.fill(rng.choice(titles))
    intro = [w.fill(rng.choice(INTROS))] + [filler() for _ in range(rng.randint(1, 3))]
    out = [f"# {title}", " ".join(intro)]
    for heading, templates in sections:
        sentences = [w.fill(t) for t in rng.sample(templates, rng.randint(2, len(templates)))]
        for _ in range(rng.randint(1, 6)):
            sentences.insert(rng.randint(1, len(sentences)), filler())
        cuts = sorted(rng.sample(range(1, len(sentences)), rng.randint(0, 2)))
        paragraphs = [" ".join(sentences[a:b]) for a, b in itertools.pairwise([0, *cuts, None])]
        out += ["## " + w.fill(heading), *paragraphs]
    doc_id = f"help/{slug(cat.name)}/{slug(line)}-{model}/{slug(kind)}"
    return doc_id + (f"-{slug(topic)}" if topic else "") + ".md", title, "\n\n".join(out) + "\n"


def random_queries(n: int) -> list[str]:
    """`n` queries of 2-5 words from the corpus vocabulary; common words weigh more."""
    vocab = [(t, 6.0) for t in COMMON_TERMS] + [(b, 1.0) for b in BRANDS]
    vocab += [(a, 2.0) for a in ACTIONS] + [(line_name(p), 0.05) for p in range(0, 2000, 7)]
    for c in CATEGORIES:
        vocab += [(c.name, 3.0)] + [(t, 1.5) for t in c.features + c.parts]
        vocab += [(" ".join(s.split()[-2:]), 1.0) for s in c.symptoms]
    terms, weights = zip(*vocab, strict=True)
    r = random.Random(f"{SEED}/queries")
    queries = []
    while len(queries) < n:
        want, words = r.randint(2, 5), []
        while len(words) < want:
            words += r.choices(terms, weights)[0].split()
        queries.append(" ".join(words[:want]))
    return queries


# ========================================================================= access lists

ORG = "bench-org"
OTHER_ORG = "other-org"  # a second tenant: its documents must never reach ORG's requesters
USERS = [f"u{i}" for i in range(1, 51)]
GROUPS = [f"g{i}" for i in range(1, 11)]
RECALL_USER = "u1"  # may read every labelled target (groups g1, g2)
LATENCY_USER = "u7"  # the "user + groups" latency mode (groups g3, g5, g8)
ACL_USERS = ("u1", "u7", "u2", "u29")
TARGET_P95_MS = 25.0
QUESTIONS_FILE = Path(__file__).resolve().parent / "retrieval_questions.json"


def access_for(index: int) -> tuple[str, Access]:
    """(organization, access list) of generated document `index`: 77% public in ORG."""
    r = random.Random(f"{SEED}/acl/{index}")
    x = r.random()
    users = tuple(sorted(r.sample(USERS, r.randint(1, 3))))
    groups = tuple(sorted(r.sample(GROUPS, r.randint(1, 2))))
    if x < 0.80:
        return (OTHER_ORG if x < 0.03 else ORG), Access(public=True)
    if x < 0.90:
        return ORG, Access(groups=groups)
    return ORG, Access(users=users, groups=groups if x >= 0.97 else ())


def memberships() -> dict[str, list[str]]:
    """The groups each bench user belongs to (`user_groups`)."""
    r = random.Random(f"{SEED}/groups")
    member = {u: sorted(r.sample(GROUPS, r.choice([0, 1, 1, 2, 3]))) for u in USERS}
    return member | {RECALL_USER: ["g1", "g2"], LATENCY_USER: ["g3", "g5", "g8"]}


@dataclass(frozen=True)
class DocInfo:
    """What the bench itself knows of a document, to check search's access filter against."""

    org: str
    access: Access
    demo: bool

    def readable_by(self, req: Requester) -> bool:
        a = self.access
        return self.org == req.org_id and (
            a.public or (req.user_id in a.users) or bool(set(a.groups) & set(req.groups))
        )


# ============================================================================ database

T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min)"


def _admin(url: str, statement: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new migrated database on DATABASE_URL's server, else on an embedded PostgreSQL in a
    temporary directory; dropped (and the embedded server stopped) however the run ends."""
    admin, pg, tmp = os.environ.get("DATABASE_URL"), None, None
    name = f"parley_bench_{uuid.uuid4().hex[:10]}"
    try:
        if not admin:
            from parley.stack.embedded import start_postgres

            tmp = Path(tempfile.mkdtemp(prefix="parley-retrieval-"))
            pg = await asyncio.to_thread(start_postgres, tmp)
            admin = pg.url
        await asyncio.to_thread(_admin, admin, "create database {}", name)
        url = conninfo.make_conninfo(admin, dbname=name)
        applied = await migrate(url)
        where = "DATABASE_URL's server" if pg is None else f"an embedded PostgreSQL in {tmp}"
        say(f"database {name} on {where}; migrations: {', '.join(applied)}")
        yield url
    finally:
        if admin:
            try:
                await asyncio.to_thread(
                    _admin, admin, "drop database if exists {} with (force)", name
                )
                say(f"dropped database {name}")
            except Exception as err:
                say(f"could not drop database {name}: {err}")
        if pg is not None:
            await asyncio.to_thread(pg.stop)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


async def ingest(pool: Pool, target: int, workers: int) -> dict[str, DocInfo]:
    """The demo documents, then generated ones until `target` chunks, by `workers`
    connections through `documents.upsert_document`; every bench user's groups."""
    docs: dict[str, DocInfo] = {}
    queue: asyncio.Queue[tuple[str, Document] | None] = asyncio.Queue(maxsize=workers * 8)
    written = 0

    async def worker() -> None:
        nonlocal written
        async with pool.connection() as conn:
            while (item := await queue.get()) is not None:
                _, chunks = await documents.upsert_document(conn, *item)
                written += chunks  # after the await: `written += await ...` loses updates

    async def progress() -> None:
        while True:
            await asyncio.sleep(5)
            rate = written / (time.monotonic() - started)
            say(f"  ingest: {written:>7,} / {target:,} chunks, {len(docs):,} docs, {rate:,.0f}/s")

    async with pool.connection() as conn:
        for user, groups in memberships().items():
            await knowledge_access.set_user_groups(conn, ORG, user, groups)
    started, planned = time.monotonic(), 0
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    reporter = asyncio.create_task(progress())
    try:
        for path in sorted((ROOT / "parley" / "demo_knowledge").glob("*.md")):
            ex = extract(path)
            docs[path.name] = DocInfo(ORG, Access(public=True), demo=True)
            await queue.put((ORG, Document(path.name, ex.title, path.name, ex.text, Access(True))))
            planned += len(chunk_text(ex.text))
        for index in itertools.count():
            if planned >= target or any(t.done() for t in tasks):  # a failed worker: raises below
                break
            doc_id, title, text = generate(index)
            org, access = access_for(index)
            docs[doc_id] = DocInfo(org, access, demo=False)
            await queue.put((org, Document(doc_id, title, doc_id, text, access)))
            planned += len(chunk_text(text))  # so the corpus does not depend on timing
        for _ in tasks:
            await queue.put(None)
        await asyncio.gather(*tasks)
    finally:
        for t in [*tasks, reporter]:
            t.cancel()
        await asyncio.gather(*tasks, reporter, return_exceptions=True)  # before the pool closes
    took = time.monotonic() - started
    say(f"ingested {len(docs):,} documents, {written:,} chunks in {took:.0f}s ({workers} conns)")
    return docs


# ======================================================================== measurements


def without_acl(search_sql: str) -> str:
    """`search_sql` with every access predicate (`search._ACL`) replaced by `true`: the
    product's own query for a reader of everything, so this mode cannot drift from it."""
    tiers = search_sql.split("union all")
    per_tier = [t.count(search._ACL) for t in tiers]
    if per_tier != [1, 1, 1]:
        raise SystemExit(f"expected search._ACL once in each of 3 tiers, found {per_tier}")
    return search_sql.replace(search._ACL, "true")


NO_ACL_SEARCH = without_acl(search._SEARCH)


@dataclass(frozen=True)
class Mode:
    name: str
    requester: Requester
    rerank: bool = False
    acl: bool = True

    async def search(self, conn: Conn, text: str, limit: int = 3) -> list[Hit]:
        """`search.search` itself; without ACL, with its query swapped for NO_ACL_SEARCH."""
        if self.acl:
            return await search.search(conn, self.requester, text, limit, rerank=self.rerank)
        with mock.patch.object(search, "_SEARCH", NO_ACL_SEARCH):
            return await search.search(conn, self.requester, text, limit, rerank=self.rerank)


async def latency(
    conn: Conn, modes: list[Mode], queries: list[str], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call and mode, after a warm-up; the modes take turns on each query
    so that load from elsewhere on the machine hits them alike."""
    for mode in modes:
        for q in queries[:warmup]:
            await mode.search(conn, q)
    times: dict[str, list[float]] = {m.name: [] for m in modes}
    r = random.Random(f"{SEED}/order")
    for _ in range(rounds):
        for q in r.sample(queries, len(queries)):
            for mode in modes:
                started = time.perf_counter()
                await mode.search(conn, q)
                times[mode.name].append((time.perf_counter() - started) * 1000)
    return times


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


async def check_acl(
    conn: Conn, docs: dict[str, DocInfo], queries: list[str]
) -> tuple[int, int, int, int]:
    """(violations, hits checked, restricted hits rightly shown, unreadable hits withheld).

    Each hit (limit 10, with and without rerank) is checked against the bench's own record
    of who may read what; `withheld` counts the requester's unreadable hits of the same
    query without the ACL, so the check is not vacuous.
    """
    member = memberships()
    requesters = [Requester(ORG), Requester(OTHER_ORG)]
    for user in ACL_USERS:
        req = await knowledge_access.requester(conn, ORG, user)
        assert list(req.groups) == member[user], f"user_groups of {user} are not the bench's"
        requesters.append(req)
    violations = checked = restricted = withheld = 0
    for q in queries:
        everything = await Mode("all", Requester(ORG), acl=False).search(conn, q, 10)
        for req in requesters:
            for rerank in (False, True):
                for hit in await Mode("acl", req, rerank).search(conn, q, 10):
                    checked += 1
                    info = docs.get(hit.document_id)
                    if info is None or not info.readable_by(req):
                        violations += 1
                        say(f"  ACL VIOLATION: {req} got {hit.document_id} for {q!r}")
                    elif not info.access.public:
                        restricted += 1
            if req.org_id == ORG:
                withheld += sum(not docs[h.document_id].readable_by(req) for h in everything)
    return violations, checked, restricted, withheld


# ================================================================================ main


async def bench(args: argparse.Namespace) -> None:
    say(f"{os.cpu_count()} CPUs, {load()}")
    async with fresh_database() as url:
        pool = create_pool(url, max_size=args.workers + 1, name="bench-retrieval")
        async with pool:
            say(f"ingesting ~{args.chunks:,} chunks through documents.upsert_document ...")
            docs = await ingest(pool, args.chunks, args.workers)
            async with pool.connection() as conn:
                started = time.monotonic()
                # What `parley ingest` runs afterwards: the tiers read the word statistics.
                await documents.refresh_statistics(conn)
                took = time.monotonic() - started
                say(f"analyze chunks (as `parley ingest` does; no vacuum): {took:.1f}s")
                await measure(conn, docs, args)


async def measure(conn: Conn, docs: dict[str, DocInfo], args: argparse.Namespace) -> None:
    cur = await conn.execute(
        "select (select count(*) from chunks) as chunks, split_part(version(), ' on ', 1) as pg,"
        " pg_size_pretty(pg_table_size('chunks')) as heap,"
        " pg_size_pretty(pg_relation_size('chunks_tsv')) as gin,"
        " (select coalesce(last_autovacuum::text, 'never') from pg_stat_user_tables"
        "  where relname = 'chunks') as vacuumed"
    )
    r = await cur.fetchone()
    say(f"{r['chunks']:,} chunks ({r['heap']}, GIN index {r['gin']}); {r['pg']}")
    # Only a vacuum empties the GIN index's pending list, which every search scans.
    say(f"chunks last autovacuumed: {r['vacuumed']} (search is slower until then)")
    labelled: dict[str, str] = json.loads(QUESTIONS_FILE.read_text())
    questions = {q: d for q, d in labelled.items() if d in docs}
    if len(questions) < len(labelled):
        say(f"WARNING: {len(labelled) - len(questions)} labelled targets not in this corpus")
    n_labelled = min(len(questions), args.queries // 2)
    queries = list(questions)[:n_labelled] + random_queries(args.queries - n_labelled)
    await report_latency(conn, queries, n_labelled, args)
    await report_recall(conn, questions, docs)
    sample = list(questions)[: args.acl_queries // 2]
    sample += random_queries(args.acl_queries)[: args.acl_queries - len(sample)]
    say(
        f"ACL check: {len(sample)} queries x {2 + len(ACL_USERS)} requesters (anonymous, another "
        f"organization's, users {', '.join(ACL_USERS)}), limit=10, rerank off and on"
    )
    violations, checked, restricted, withheld = await check_acl(conn, docs, sample)
    print(
        f"ACL violations: {violations} (of {checked} hits checked; {restricted} restricted hits "
        f"rightly shown; {withheld} hits of the same queries without ACL were withheld)\n",
        flush=True,
    )


async def report_latency(
    conn: Conn, queries: list[str], n_labelled: int, args: argparse.Namespace
) -> None:
    user = await knowledge_access.requester(conn, ORG, LATENCY_USER)
    modes = [
        mode
        for rerank, tail in ((False, ""), (True, " + rerank"))
        for mode in (
            Mode("no ACL (reads everything)" + tail, Requester(ORG), rerank, acl=False),
            Mode("anonymous (public only)" + tail, Requester(ORG), rerank),
            Mode(f"{user.user_id} + groups {','.join(user.groups)}" + tail, user, rerank),
        )
    ]
    say(
        f"latency: {len(queries)} queries ({n_labelled} labelled, the rest random 2-5 words) "
        f"x {len(modes)} modes x {args.rounds} round(s), limit=3, {args.warmup} warm-up; {load()}"
    )
    times = await latency(conn, modes, queries, args.rounds, args.warmup)
    print(f"\n{'mode':<36} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, ms in times.items():
        p50, p95, p99 = percentiles(ms)
        print(f"{name:<36} {len(ms):>5} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f} {max(ms):>8.2f}")
    p95s = {name: percentiles(ms)[1] for name, ms in times.items()}
    worst = max(p95s, key=p95s.__getitem__)
    over = [name for name, p95 in p95s.items() if p95 > TARGET_P95_MS]
    print(
        f"verdict: p95 <= {TARGET_P95_MS:.0f} ms "
        + (f"MET by all {len(p95s)} modes" if not over else f"NOT MET by {', '.join(over)}")
        + f" (slowest: {worst}, p95 {p95s[worst]:.1f} ms); {load()}\n",
        flush=True,
    )


async def report_recall(conn: Conn, questions: dict[str, str], docs: dict[str, DocInfo]) -> None:
    reader = await knowledge_access.requester(conn, ORG, RECALL_USER)
    say(f"recall@3 as {reader.user_id} (groups {','.join(reader.groups)}): may read all targets")
    top: dict[bool, dict[str, list[str]]] = {}
    for rerank in (False, True):
        mode = Mode("recall", reader, rerank)
        top[rerank] = {q: [h.document_id for h in await mode.search(conn, q)] for q in questions}
    found = {rr: {q: questions[q] in top[rr][q] for q in questions} for rr in top}
    demo = [q for q, d in questions.items() if docs[d].demo]
    subsets = {"all": list(questions), "demo documents": demo}
    subsets["generated"] = [q for q in questions if q not in demo]
    print(f"{'questions':<22} {'n':>4} {'recall@3':>9} {'+ rerank':>9}")
    for name, subset in subsets.items():
        rates = [sum(found[rr][q] for q in subset) / max(len(subset), 1) for rr in (False, True)]
        print(f"{name:<22} {len(subset):>4} {rates[0]:>9.3f} {rates[1]:>9.3f}")
    for q in questions:
        if not (found[False][q] and found[True][q]):
            flags = ("-" if not found[False][q] else " ") + ("r" if not found[True][q] else " ")
            got = top[False][q][0] if top[False][q] else "(no hit)"
            print(f"  missed {flags} {q!r}: want {questions[q]}, first hit {got}")
    print("  ('-' missed without rerank, 'r' missed with rerank)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="corpus size (chunks)")
    parser.add_argument("--queries", type=int, default=120, help="latency query set size")
    parser.add_argument("--rounds", type=int, default=1, help="timed passes per mode")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up queries per mode")
    parser.add_argument("--acl-queries", type=int, default=20, help="ACL check sample size")
    parser.add_argument("--workers", type=int, default=4, help="ingest connections")
    args = parser.parse_args()

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError):  # SIGTERM cleans up like Ctrl-C does
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await bench(args)
        say(f"done; {load()}")

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

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
            reader of everything (its statement from `search.full_text_sql` with the access
            filter `true`), an anonymous requester and a user with groups; a verdict on the
            target
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
import signal
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from psycopg import conninfo

from parley.knowledge import access as knowledge_access
from parley.knowledge import documents, search
from parley.knowledge.chunking import chunk_text, extract
from parley.knowledge.rerank import lexical_rerank
from parley.knowledge.types import Access, Document, Hit, Requester
from parley.stack import databases
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
CORPUS_FILE = Path(__file__).resolve().parent / "retrieval_corpus.json"


@dataclass(frozen=True)
class Category:
    name: str
    parts: list[str]
    features: list[str]
    symptoms: list[str]
    connected: bool  # has an app and firmware


# The templates. Their placeholders: P product ("Nordel Velto 5 kettle"), S short name
# ("Velto 5"), L line, B brand, C category, APP, T the article's topic (feature, symptom or
# part); drawn per use: F / F2 a feature (F2 not the topic), PART, ACT, N, SEC, MIN, VER,
# COLOUR, YEAR, PRICE; per article: ERR error code, MONTHS warranty, DAYS return period.
# Article kinds have titles and 4 sections, each a heading and its own sentences; the
# filler is support boilerplate that every section draws a few sentences from (common
# words in many chunks). Line names are SYL_A x SYL_B: 3000 made-up words ("Velto", ...).
_CORPUS = json.loads(CORPUS_FILE.read_text())
BRANDS: list[str] = _CORPUS["brands"]
SYL_A, SYL_B = _CORPUS["line_syllables"]
COMMON_TERMS: list[str] = _CORPUS["common_terms"]  # what random queries draw most
ACTIONS: list[str] = _CORPUS["actions"]
COLOURS: list[str] = _CORPUS["colours"]
CATEGORIES = [Category(**category) for category in _CORPUS["categories"]]
INTROS: list[str] = _CORPUS["intros"]
KINDS: dict[str, tuple[list[str], list[tuple[str, list[str]]]]] = {
    kind: (k["titles"], [(s["heading"], s["sentences"]) for s in k["sections"]])
    for kind, k in _CORPUS["kinds"].items()
}
FILLER: list[str] = _CORPUS["filler"]
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


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new migrated database on DATABASE_URL's server, else on an embedded PostgreSQL in a
    temporary directory; dropped (and the embedded server stopped) however the run ends."""
    with (
        databases.database_server() as server,
        databases.fresh_database(server, "parley_bench") as url,
    ):
        applied = await migrate(url)
        where = conninfo.conninfo_to_dict(url)
        say(
            f"database {where['dbname']} on {where.get('host') or 'localhost'}; "
            f"migrations: {', '.join(applied)}"
        )
        yield url
    say(f"dropped database {where['dbname']}")


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


NO_ACL_SQL = search.full_text_sql(access_filter="true")


async def search_everything(conn: Conn, org: str, text: str, limit: int, rerank: bool) -> list[Hit]:
    """`search.search`'s full-text path for a reader of everything: the product's statement
    with its access filter `true`, the same candidate pool and rerank."""
    fetch = max(limit * search.RERANK_POOL, 12) if rerank else limit
    params = {"org": org, "user": None, "groups": [], "text": text, "limit": fetch}
    cur = await conn.execute(NO_ACL_SQL, params)
    hits = [search.hit_from_row(row) for row in await cur.fetchall()]
    return lexical_rerank(text, hits, limit) if rerank else hits


@dataclass(frozen=True)
class Mode:
    name: str
    requester: Requester
    rerank: bool = False
    acl: bool = True

    async def search(self, conn: Conn, text: str, limit: int = 3) -> list[Hit]:
        """`search.search` itself; without ACL, `search_everything` in the same organization."""
        if self.acl:
            return await search.search(conn, self.requester, text, limit, rerank=self.rerank)
        return await search_everything(conn, self.requester.org_id, text, limit, self.rerank)


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

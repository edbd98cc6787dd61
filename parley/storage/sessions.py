"""Conversations, their participants, sessions, and the agents they talk to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from psycopg.types.json import Jsonb

from parley.storage.db import Conn
from parley.widget_auth import EmbedPolicy

DEFAULT_AGENT_NAME = "Parley"
DEFAULT_USER_NAME = "Visitor"  # a user participant whose name nobody gave


SessionStatus = Literal["active", "idle", "ended"]


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    org_id: str
    policy: EmbedPolicy | None
    registered: bool = True  # False: an implicit agent (PARLEY_WIDGET_AUTH_STRICT off)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    conversation_id: str
    agent_id: str
    agent_name: str
    user_participant_id: str
    agent_participant_id: str
    status: SessionStatus
    org_id: str
    user_id: str | None
    owner_org: str | None = None  # with owner_subject: the principal that owns it
    owner_subject: str | None = None


@dataclass(frozen=True)
class Expiry:
    """A session is gone once unused for `idle_seconds` or older than `max_age_seconds`."""

    idle_seconds: float
    max_age_seconds: float


@dataclass(frozen=True)
class NewSession:
    """What `create_conversation_session` asks for, already validated."""

    agent: Agent
    user_name: str | None = None
    user_email: str | None = None
    browser_fingerprint: str | None = None
    metadata: dict[str, Any] | None = None
    supports: list[str] | None = None
    user_id: str | None = None  # verified through authContext, or the principal's subject
    origin: str | None = None
    resume_conversation_id: str | None = None
    org_id: str | None = None  # the principal's organization; None: the agent's
    owner_subject: str | None = None  # the principal's subject: only it may use the session


def as_uuid(value: str | None) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (so it can match nothing)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def get_agent(conn: Conn, agent_id: str, default_org: str) -> Agent:
    """The registered agent, or an implicit one (default name and org, no policy)."""
    cur = await conn.execute(
        "select a.name, a.org_id, p.agent_id as has_policy, p.allowed_origins, p.auth_key"
        " from agents a left join agent_embed_policies p on p.agent_id = a.id"
        " where a.id = %s",
        (agent_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return Agent(agent_id, DEFAULT_AGENT_NAME, default_org, None, registered=False)
    policy = (
        EmbedPolicy(list(row["allowed_origins"]), row["auth_key"]) if row["has_policy"] else None
    )
    return Agent(agent_id, row["name"], row["org_id"], policy)


async def agent_models(conn: Conn, agent_id: str) -> tuple[str, ...] | None:
    """The models a client may name for this agent; None: unregistered, or no list."""
    cur = await conn.execute("select models from agents where id = %s", (agent_id,))
    row = await cur.fetchone()
    return tuple(row["models"]) if row is not None and row["models"] is not None else None


async def upsert_agent(
    conn: Conn,
    agent_id: str,
    *,
    name: str,
    org_id: str,
    allowed_origins: list[str] | None = None,
    auth_key: str | None = None,
    models: list[str] | None = None,
) -> None:
    """Register an agent; `allowed_origins` not None gives it an embed policy; `models`
    None lets clients pick PARLEY_MODEL only."""
    async with conn.transaction():
        await conn.execute(
            "insert into agents (id, name, org_id, models) values (%s, %s, %s, %s)"
            " on conflict (id) do update set name = excluded.name, org_id = excluded.org_id,"
            " models = excluded.models, updated_at = now()",
            (agent_id, name, org_id, models),
        )
        if allowed_origins is None:
            await conn.execute("delete from agent_embed_policies where agent_id = %s", (agent_id,))
        else:
            await conn.execute(
                "insert into agent_embed_policies (agent_id, allowed_origins, auth_key)"
                " values (%s, %s, %s) on conflict (agent_id) do update set"
                " allowed_origins = excluded.allowed_origins, auth_key = excluded.auth_key",
                (agent_id, allowed_origins, auth_key),
            )


# A conversation is resumable by the caller when it belongs to the same agent and
# organization and either names the same verified user, or (anonymous) was opened from the
# same browser. One bound to neither is never reopened: its id travels (webhooks, the
# approvals desk), so it must not be a capability on its own.
_RESUMABLE = """
select c.id, c.org_id, u.id as user_participant_id, a.id as agent_participant_id
from conversations c
join participants u on u.conversation_id = c.id and u.kind = 'user'
join participants a on a.conversation_id = c.id and a.kind = 'ai-agent'
where c.id = %(id)s and c.agent_id = %(agent_id)s and c.org_id = %(org_id)s
  and case
        when u.external_id is not null then u.external_id = %(user_id)s
        when u.browser_fingerprint is not null then u.browser_fingerprint = %(fingerprint)s
        else false
      end
order by u.created_at, a.created_at
limit 1
for update of c
"""


async def create_session(conn: Conn, new: NewSession) -> SessionRecord:
    """Create a session, on a resumed conversation when the caller may see it."""
    agent = new.agent
    org_id = new.org_id or agent.org_id
    owner_org = org_id if new.owner_subject is not None else None
    session_id = uuid.uuid4()
    async with conn.transaction():  # all or nothing; `for update` holds the resumed one
        resumed = None
        resume_id = as_uuid(new.resume_conversation_id)
        if resume_id is not None:
            cur = await conn.execute(
                _RESUMABLE,
                {
                    "id": resume_id,
                    "agent_id": agent.id,
                    "org_id": org_id,
                    "user_id": new.user_id,
                    "fingerprint": new.browser_fingerprint,
                },
            )
            resumed = await cur.fetchone()
        if resumed is not None:
            conversation_id = resumed["id"]
            user_pid = resumed["user_participant_id"]
            agent_pid = resumed["agent_participant_id"]
            # `supports` sent again replaces what the conversation declared; left out, kept.
            await conn.execute(
                "update conversations set updated_at = now(), supports = coalesce(%s, supports)"
                " where id = %s",
                (new.supports, conversation_id),
            )
        else:
            conversation_id, user_pid, agent_pid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "insert into conversations (id, org_id, agent_id, name, idempotency_key, metadata,"
                " supports) values (%s, %s, %s, %s, %s, %s, %s)",
                (
                    conversation_id,
                    org_id,
                    agent.id,
                    f"Session {session_id}",
                    str(session_id),
                    Jsonb(new.metadata) if new.metadata is not None else None,
                    new.supports or [],
                ),
            )
            await conn.execute(
                "insert into participants (id, conversation_id, org_id, kind, external_id,"
                " browser_fingerprint, name, email) values (%s, %s, %s, 'user', %s, %s, %s, %s)",
                (
                    user_pid,
                    conversation_id,
                    org_id,
                    new.user_id,
                    new.browser_fingerprint,
                    new.user_name or DEFAULT_USER_NAME,
                    new.user_email,
                ),
            )
            await conn.execute(
                "insert into participants (id, conversation_id, org_id, kind, internal_id, name)"
                " values (%s, %s, %s, 'ai-agent', %s, %s)",
                (agent_pid, conversation_id, org_id, agent.id, agent.name),
            )
        await conn.execute(
            "insert into sessions (id, conversation_id, agent_id, agent_name, user_participant_id,"
            " agent_participant_id, supports, metadata, origin, owner_org, owner_subject)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                session_id,
                conversation_id,
                agent.id,
                agent.name,
                user_pid,
                agent_pid,
                new.supports or [],
                Jsonb(new.metadata) if new.metadata is not None else None,
                new.origin,
                owner_org,
                new.owner_subject,
            ),
        )
    return SessionRecord(
        id=str(session_id),
        conversation_id=str(conversation_id),
        agent_id=agent.id,
        agent_name=agent.name,
        user_participant_id=str(user_pid),
        agent_participant_id=str(agent_pid),
        status="active",
        org_id=org_id,
        user_id=new.user_id,
        owner_org=owner_org,
        owner_subject=new.owner_subject,
    )


# A use within this long of the last recorded one is not written again (one write a minute
# per busy session, not one per frame).
_TOUCH_EVERY = "1 minute"


async def get_session(conn: Conn, session_id: str, expiry: Expiry) -> SessionRecord | None:
    """The session, or None when the id is unknown, expired, or not a UUID at all.

    Finding it counts as using it (the idle clock restarts)."""
    sid = as_uuid(session_id)
    if sid is None:
        return None
    cur = await conn.execute(
        "select s.id, s.conversation_id, s.agent_id, s.agent_name, s.user_participant_id,"
        " s.agent_participant_id, s.status, c.org_id, u.external_id as user_id,"
        " s.owner_org, s.owner_subject,"
        f" s.last_activity_at < now() - interval '{_TOUCH_EVERY}' as stale"
        " from sessions s join conversations c on c.id = s.conversation_id"
        " join participants u on u.id = s.user_participant_id"
        " where s.id = %(id)s"
        " and s.created_at > now() - make_interval(secs => %(max_age)s)"
        " and s.last_activity_at > now() - make_interval(secs => %(idle)s)",
        {"id": sid, "max_age": expiry.max_age_seconds, "idle": expiry.idle_seconds},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    if row["stale"]:
        await conn.execute("update sessions set last_activity_at = now() where id = %s", (sid,))
    return SessionRecord(
        id=str(row["id"]),
        conversation_id=str(row["conversation_id"]),
        agent_id=row["agent_id"],
        agent_name=row["agent_name"],
        user_participant_id=str(row["user_participant_id"]),
        agent_participant_id=str(row["agent_participant_id"]),
        status=row["status"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        owner_org=row["owner_org"],
        owner_subject=row["owner_subject"],
    )

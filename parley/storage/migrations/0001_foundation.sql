-- Conversations, participants, sessions, messages, and agents' embed policies.

create table agents (
    id          text primary key,
    name        text not null,
    org_id      text not null default 'default',
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- A row here means the agent has an embed policy (PROTOCOL.md, create_conversation_session).
create table agent_embed_policies (
    agent_id         text primary key references agents (id) on delete cascade,
    allowed_origins  text[] not null default '{}',
    auth_key         text
);

create table conversations (
    id               uuid primary key,
    org_id           text not null,
    agent_id         text not null,
    platform         text not null default 'web',
    name             text not null,
    idempotency_key  text not null,
    metadata         jsonb,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

create table participants (
    id                   uuid primary key,
    conversation_id      uuid not null references conversations (id) on delete cascade,
    org_id               text not null,
    kind                 text not null check (kind in ('user', 'ai-agent', 'human-agent')),
    external_id          text,
    internal_id          text,
    browser_fingerprint  text,
    name                 text not null,
    email                text,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);
create index participants_conversation on participants (conversation_id);

create table sessions (
    id                    uuid primary key,
    conversation_id       uuid not null references conversations (id) on delete cascade,
    agent_id              text not null,
    agent_name            text not null,
    user_participant_id   uuid not null references participants (id),
    agent_participant_id  uuid not null references participants (id),
    status                text not null default 'active'
                          check (status in ('active', 'idle', 'ended')),
    supports              text[] not null default '{}',
    metadata              jsonb,
    origin                text,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    last_activity_at      timestamptz not null default now(),
    ended_at              timestamptz
);
create index sessions_conversation on sessions (conversation_id);

-- `seq` orders messages totally, even when many share one created_at.
create table messages (
    id               uuid primary key,
    seq              bigint generated always as identity unique,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    participant_id   uuid references participants (id),
    direction        text not null check (direction in ('inbound', 'outbound')),
    text             text not null,
    turn_id          text,
    created_at       timestamptz not null default now()
);
create index messages_conversation_seq on messages (conversation_id, seq desc);

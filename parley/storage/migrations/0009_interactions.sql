-- Rich interactions: a turn's structured question to the visitor (a form, choice chips),
-- parked durably as an approval is; the render capabilities a conversation's client declared;
-- and the phone number a visitor may give (name and email already have columns).

-- `supports` of create_conversation_session, kept on the conversation: a later session that
-- resumes it without the key inherits them, one that sends the key replaces them.
alter table conversations add column supports text[] not null default '{}';
update conversations c set supports = s.supports
from (
    select distinct on (conversation_id) conversation_id, supports
    from sessions order by conversation_id, created_at desc
) s
where s.conversation_id = c.id;

alter table participants add column phone text;

create table interactions (
    id               uuid primary key,              -- the interactionId clients echo
    turn_id          text not null references turns (id) on delete cascade,
    session_id       uuid not null references sessions (id) on delete cascade,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    request_id       text not null,
    tool_call_id     text not null,
    tool_name        text not null,                 -- the raise tool the model called
    kind             text not null,                 -- identity_intake | choices
    spec             jsonb not null,                -- what the client renders
    reason           text not null,
    created_at       timestamptz not null default now(),
    deadline         timestamptz not null,
    invalid_submits  int not null default 0,        -- answered with interaction_invalid
    status           text check (status in ('submitted', 'declined', 'expired', 'cancelled')),
    answer           jsonb,                         -- the accepted values
    decided_by       text,
    decided_at       timestamptz,
    delivered_at     timestamptz,                   -- when the answer was signalled to the turn
    unique (turn_id, tool_call_id)
);
-- A turn parks on one question at a time, and a session has one turn.
create unique index interactions_one_pending_per_session on interactions (session_id)
    where status is null;
create index interactions_undelivered on interactions (decided_at)
    where status in ('submitted', 'declined') and delivered_at is null;
-- A kind the visitor declined is not asked again in that conversation.
create index interactions_declined on interactions (conversation_id, kind)
    where status = 'declined';

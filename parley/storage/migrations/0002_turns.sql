-- Turns: the per-session active-turn slot and the history of turns, and the steps a turn
-- takes between model calls (tool calls and their results), which the model activity
-- reads back to build the next request.

create table turns (
    id           text primary key,            -- the workflow id: turn:<sessionId>:<requestId>
    session_id   uuid not null references sessions (id) on delete cascade,
    request_id   text not null,
    status       text not null default 'running'
                 check (status in ('running', 'completed', 'failed', 'cancelled', 'abandoned')),
    stream       boolean not null default true,
    created_at   timestamptz not null default now(),
    finished_at  timestamptz
);
-- The slot: at most one running turn per session, across every gateway.
create unique index turns_one_running_per_session on turns (session_id) where status = 'running';
create index turns_session on turns (session_id, created_at desc);

create table turn_steps (
    turn_id      text not null references turns (id) on delete cascade,
    iteration    int not null,
    call_id      text not null default '',    -- '' for the assistant step itself
    kind         text not null check (kind in ('assistant', 'tool_result')),
    content      jsonb not null,
    created_at   timestamptz not null default now(),
    primary key (turn_id, iteration, kind, call_id)
);

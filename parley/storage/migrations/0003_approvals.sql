-- Human in the loop: pending and decided approvals (the audit trail), and the record of
-- every approved write tool's execution (at most once per workflow + tool call).

create table approvals (
    id            uuid primary key,
    turn_id       text not null references turns (id) on delete cascade,
    session_id    uuid not null references sessions (id) on delete cascade,
    request_id    text not null,
    tool_call_id  text not null,
    tool_name     text not null,
    arguments     jsonb not null,
    description   text not null,
    created_at    timestamptz not null default now(),
    deadline      timestamptz not null,
    decision      text check (decision in ('approved', 'denied', 'expired', 'cancelled')),
    decided_by    text,
    decided_at    timestamptz,
    delivered_at  timestamptz,          -- when the verdict was signalled to the workflow
    unique (turn_id, tool_call_id)
);
-- A turn parks on one write at a time, and a session has one turn: one pending approval.
create unique index approvals_one_pending_per_session on approvals (session_id)
    where decision is null;
create index approvals_undelivered on approvals (decided_at)
    where decision in ('approved', 'denied') and delivered_at is null;

create table tool_executions (
    workflow_id   text not null,
    tool_call_id  text not null,
    tool_name     text not null,
    arguments     jsonb not null,
    result        text not null,
    is_error      boolean not null,
    executed_at   timestamptz not null default now(),
    primary key (workflow_id, tool_call_id)
);

-- The demo write tool's ledger (PARLEY_DEMO=1): a double refund would show here.
create table demo_refunds (
    id          bigint generated always as identity primary key,
    order_id    text not null,
    reason      text,
    call_key    text not null,
    created_at  timestamptz not null default now()
);

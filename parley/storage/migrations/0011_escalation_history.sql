-- Escalation to a person, and agent replies that keep what happened.

-- A conversation the agent handed to a person (the built-in `escalate_to_human` tool), for a
-- human team to pick up (`GET /admin/escalations`). One open escalation per conversation: a
-- later one while it is open updates its reason and turn. `created_at` is when the customer
-- started waiting.
create table escalations (
    id               uuid primary key,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    org_id           text not null,
    agent_id         text not null,
    turn_id          text references turns (id) on delete set null,  -- the latest asking turn
    reason           text not null,
    status           text not null default 'open' check (status in ('open', 'resolved')),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    resolved_at      timestamptz,
    resolved_by      text
);
create unique index escalations_one_open_per_conversation on escalations (conversation_id)
    where status = 'open';
create index escalations_org_status on escalations (org_id, status, created_at desc);
create index escalations_turn on escalations (turn_id);

-- What a client needs to show an agent reply again after a reload (citations, tool calls
-- and results, decisions, escalation, how the turn ended), recorded by the turn's last step.
-- Null for user messages and for replies stored before this migration.
alter table messages add column structured jsonb;
-- A turn stopped or failed before its reply leaves an agent message in its place, marked
-- here; the model's view of the conversation leaves these out.
alter table messages add column cut_short text check (cut_short in ('cancelled', 'failed'));

-- The approvals desk: who may decide a parked write (the visitor and/or roles), the
-- organization whose desk lists it, the tool's schema (an approver's edited arguments are
-- validated against it), and the decision's audit: the approved arguments, a hash binding
-- the decision to the requested and approved arguments, and the approver's note.

alter table approvals add column approvers text[] not null default '{visitor}';
alter table approvals add column org_id text;
alter table approvals add column parameters jsonb;
alter table approvals add column approved_arguments jsonb;
alter table approvals add column decision_hash text;
alter table approvals add column note text;
-- A deadline the desk moved later, until the turn was told (the reconciler retells it).
alter table approvals add column extended_at timestamptz;
alter table approvals add column extension_delivered_at timestamptz;
create index approvals_pending_by_org on approvals (org_id, deadline) where decision is null;
create index approvals_extension_undelivered on approvals (extended_at)
    where extended_at is not null and extension_delivered_at is null;

-- The decision a write ran under: executed = approved, provable from the two rows.
alter table tool_executions add column decision_hash text;

-- Where an organization's approvals are announced: a signed POST per requested, decided
-- and expired approval (`parley.webhooks`). The secret signs; it is never sent.
create table org_webhooks (
    org_id      text primary key,
    url         text not null,
    secret      text not null,
    updated_at  timestamptz not null default now()
);

-- Cost and abuse limits shared by every gateway: rate counters, daily usage, and the models
-- an agent lets a client pick.

-- One row per limit and subject (`turns_per_ip` + an address, `turns_per_session` + a
-- session id, ...): a fixed window that opens at the first hit and lasts the limit's period.
-- Only admitted hits count. Rows whose window ended are pruned by the gateways.
create table rate_counters (
    name        text not null,
    subject     text not null,
    window_end  timestamptz not null,
    hits        int not null,
    primary key (name, subject)
);
create index rate_counters_window_end on rate_counters (window_end);

-- Tokens and USD spent per UTC day, per organization (scope 'org') and per agent ('agent'),
-- added by the worker after each model call and read by the gateway before a turn starts.
create table usage_daily (
    day         date not null,
    scope       text not null check (scope in ('org', 'agent')),
    subject     text not null,
    tokens      bigint not null default 0,
    cost_usd    numeric(18, 8) not null default 0,
    updated_at  timestamptz not null default now(),
    primary key (day, scope, subject)
);

-- The models a client may name in send_message; null: PARLEY_MODEL only.
alter table agents add column models text[];

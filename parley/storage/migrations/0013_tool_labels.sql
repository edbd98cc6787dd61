-- What customers see of each tool in the chat widget ("Order lookup", "Refund"), recorded by
-- every worker at start from its tool registry (the gateway has no registry of its own) and
-- served with each agent's widget profile.
create table tool_labels (
    name        text primary key,
    label       text not null,
    updated_at  timestamptz not null default now()
);

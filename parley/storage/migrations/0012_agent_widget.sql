-- What the embeddable widget shows for an agent before the first message: a greeting,
-- starter questions and an accent colour (its name is agents.name).
create table agent_widget (
    agent_id    text primary key references agents (id) on delete cascade,
    greeting    text,
    starters    text[] not null default '{}',
    accent      text,
    updated_at  timestamptz not null default now()
);

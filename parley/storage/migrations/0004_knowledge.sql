-- Knowledge: documents with their access lists, chunks with full-text search, the groups a
-- user belongs to, per-organization personas, and the sources each turn drew on.

create table organizations (
    id          text primary key,
    name        text not null default '',
    persona     text,                      -- replaces the default system prompt when set
    updated_at  timestamptz not null default now()
);

create table documents (
    org_id        text not null,
    id            text not null,           -- path relative to the folder ingested
    title         text not null,
    source        text not null,
    content_hash  text not null,
    acl_public    boolean not null default false,
    acl_users     text[] not null default '{}',
    acl_groups    text[] not null default '{}',
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (org_id, id)
);

-- The access list is copied onto each chunk so the filter runs inside the search itself.
create table chunks (
    id           bigint generated always as identity primary key,
    org_id       text not null,
    document_id  text not null,
    ord          int not null,
    heading      text not null default '',
    content      text not null,
    acl_public   boolean not null,
    acl_users    text[] not null,
    acl_groups   text[] not null,
    tsv          tsvector generated always as (
                     setweight(to_tsvector('english', heading), 'A')
                     || setweight(to_tsvector('english', content), 'B')
                 ) stored,
    foreign key (org_id, document_id) references documents (org_id, id) on delete cascade
);
create index chunks_tsv on chunks using gin (tsv);
create index chunks_document on chunks (org_id, document_id, ord);

create table user_groups (
    org_id    text not null,
    user_id   text not null,
    group_id  text not null,
    primary key (org_id, user_id, group_id)
);

create table turn_sources (
    turn_id      text not null references turns (id) on delete cascade,
    document_id  text not null,
    title        text not null,
    source       text not null,
    heading      text not null default '',
    content      text not null,
    score        double precision not null,
    origin       text not null check (origin in ('grounding', 'search')),
    created_at   timestamptz not null default now()
);
create index turn_sources_turn on turn_sources (turn_id);

-- send_message extras: what a person attaches to a message, and skills.

-- Images (sent to the model with their message, on every later turn too) and files (for
-- the turn's tools, never sent to the model). They belong to the user message of the turn
-- they came with (messages.turn_id): the gateway stores them before it starts the turn,
-- the turn stores the message.
create table attachments (
    turn_id          text not null,
    kind             text not null check (kind in ('image', 'file')),
    position         int not null,
    conversation_id  uuid not null references conversations (id) on delete cascade,
    media_type       text,          -- an inline image's type (read from its bytes); a file's mimeType
    data             bytea,         -- an inline image, decoded
    url              text,          -- a linked (https) image; a file's data: or https URL
    name             text,          -- a file's name
    detail           text check (detail in ('low', 'high', 'auto')),  -- an image's hint, as sent
    created_at       timestamptz not null default now(),
    primary key (turn_id, kind, position),
    check ((kind = 'image') = (name is null)),
    check (kind = 'file' or (data is null) <> (url is null))
);
create index attachments_conversation on attachments (conversation_id, kind);
-- A turn's user message, found by its turn (a tool lists the files of its conversation).
create index if not exists messages_turn on messages (turn_id) where turn_id is not null;

-- An organization's skills: instructions added to the system prompt of a turn that names
-- one, and the tools it may use (null: all).
create table skills (
    org_id      text not null,
    name        text not null,
    prompt      text not null,
    tools       text[],
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (org_id, name)
);

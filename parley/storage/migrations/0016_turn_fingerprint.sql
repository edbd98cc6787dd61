-- What a send_message asked, hashed: a repeated requestId re-attaches to its turn only
-- when it asks the same (a client's retry); another message under it is refused rather
-- than dropped. Turns claimed before this column existed have none and are re-attached.
alter table turns add column if not exists message_sha256 bytea;

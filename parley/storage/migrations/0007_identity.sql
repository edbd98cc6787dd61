-- A session created by an authenticated principal belongs to it (org + subject); a session
-- without an owner is a bearer capability. last_activity_at drives the idle expiry.
alter table sessions add column owner_org text;
alter table sessions add column owner_subject text;
alter table sessions add constraint sessions_owner_whole
    check ((owner_org is null) = (owner_subject is null));

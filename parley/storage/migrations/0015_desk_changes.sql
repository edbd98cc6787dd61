-- The desk's live updates: every change to an approval that can move an organization's
-- pending set (asked, decided, expired, cancelled, extended) NOTIFYs the organization on
-- `parley_approvals` when its transaction commits; each gateway LISTENs on the one
-- connection it keeps for the live lane and wakes that organization's waiting desk polls
-- (`GET /api/approvals?wait=`). The payload is the org id only; NOTIFY folds repeats
-- within one transaction.
create function parley_approvals_changed() returns trigger language plpgsql as $$
begin
    if new.org_id is not null then
        perform pg_notify('parley_approvals', new.org_id);
    end if;
    return null;
end
$$;

create trigger approvals_changed after insert or update of decision, deadline on approvals
    for each row execute function parley_approvals_changed();

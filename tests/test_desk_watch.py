"""The desk's waits: a change wakes only its organization's polls, and each principal and
client address holds a bounded number of them (gateway/desk_watch.py)."""

from __future__ import annotations

from gateway.desk_watch import ApprovalWatch


async def test_a_change_wakes_its_organizations_polls_only() -> None:
    watch = ApprovalWatch()
    with watch.subscribe("acme") as acme, watch.subscribe("globex") as globex:
        assert watch.waiting() == 2
        watch.changed("acme")
        assert acme.is_set() and not globex.is_set()
        watch.changed_everywhere()  # the listener reconnected: anything may have changed
        assert globex.is_set()
    assert watch.waiting() == 0
    watch.changed("acme")  # nobody waits: nothing to wake, nothing kept


async def test_waits_are_bounded_per_principal_and_per_address() -> None:
    watch = ApprovalWatch(per_principal=2, per_address=2)
    with (
        watch.admit("acme/sam", "10.0.0.1") as first,
        watch.admit("acme/sam", "10.0.0.2") as second,
        watch.admit("acme/sam", "10.0.0.3") as third,
    ):
        assert (first, second, third) == (True, True, False)
        with (
            watch.admit("acme/kim", "10.0.0.1") as kim,
            watch.admit("acme/ann", "10.0.0.1") as ann,
        ):
            assert kim is True and ann is False  # 10.0.0.1 holds two already (sam, kim)
    # All were released (the refused ones counted nothing): the full allowance is back.
    with watch.admit("acme/sam", "10.0.0.1") as again, watch.admit("acme/sam", "10.0.0.1") as more:
        assert again and more

"""The API's fair share of engine slots: who gets a freed slot, and that a waiter who leaves gives back its place."""

from __future__ import annotations

import asyncio

import pytest

from ui.fair_share import FairShare


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_freed_slot_goes_to_the_client_with_the_fewest_running():
    async def scenario() -> list[str]:
        share = FairShare(2)
        granted: list[str] = []

        async def choice(client: str, request: int, name: str) -> None:
            await share.acquire(client, request)
            granted.append(name)

        tasks = [asyncio.ensure_future(choice("a", 1, f"a{i}")) for i in range(6)]  # one big request
        await settle()
        tasks += [asyncio.ensure_future(choice("b", 2, "b0")), asyncio.ensure_future(choice("a", 3, "a-other"))]
        await settle()
        assert granted == ["a0", "a1"] and share.running == 2
        share.release("a", 1)
        await settle()
        assert granted[-1] == "b0"  # b has none running, a has one
        share.release("b", 2)
        await settle()
        assert granted[-1] == "a-other"  # within a: the request with none running before the big one's next
        for client, request in (("a", 3), ("a", 1), ("a", 1), ("a", 1)):
            share.release(client, request)
            await settle()
        await asyncio.wait_for(asyncio.gather(*tasks), 1)
        return granted

    granted = asyncio.run(scenario())
    assert granted == ["a0", "a1", "b0", "a-other", "a2", "a3", "a4", "a5"]


def test_a_waiter_that_leaves_gives_back_its_place_or_its_slot():
    async def scenario() -> None:
        share = FairShare(1)
        await share.acquire("a", 1)
        waiting = asyncio.ensure_future(share.acquire("b", 2))
        await settle()
        waiting.cancel()  # a client that disconnects while queued
        await settle()
        assert share.waiting == [] and share.running == 1
        granted_then_left = asyncio.ensure_future(share.acquire("c", 3))
        await settle()
        share.release("a", 1)  # grants c's slot ...
        granted_then_left.cancel()  # ... but c is cancelled before it resumes: the slot comes back
        with pytest.raises(asyncio.CancelledError):
            await granted_then_left
        assert share.running == 0 and not share.per_client and not share.per_request
        await asyncio.wait_for(share.acquire("d", 4), 1)

    asyncio.run(scenario())


def test_at_least_one_slot():
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(0)

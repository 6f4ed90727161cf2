from collections import Counter
from typing import Any

import pytest

from spotgate.fleet.worker import Worker, WorkerState
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.selection import (
    LeastOutstanding,
    PolicyOptions,
    PrefixAffinity,
    SelectionPolicy,
    affinity_prefix,
    rendezvous_rank,
)


def workers(*ids: str) -> list[Worker]:
    return [
        Worker(id=i, pool="p", model="m", engine="sim", url="", state=WorkerState.READY)
        for i in ids
    ]


def test_least_outstanding_picks_the_idlest_worker() -> None:
    load = InFlight()
    policy = SelectionPolicy.make("least-outstanding", load)
    for _ in range(3):
        load.start("a")
    load.start("b")
    assert policy.choose(workers("a", "b", "c"), {}).id == "c"
    load.start("c")
    load.start("c")
    assert policy.choose(workers("a", "b", "c"), {}).id == "b"


def test_equal_workers_share_the_load_evenly() -> None:
    load = InFlight()
    policy = LeastOutstanding(load)
    picks = [policy.choose(workers("a", "b", "c"), {}).id for _ in range(300)]
    assert {w: picks.count(w) for w in "abc"} == {"a": 100, "b": 100, "c": 100}


def test_concurrent_requests_spread_across_workers() -> None:
    load = InFlight()
    policy = LeastOutstanding(load)
    for _ in range(6):
        load.start(policy.choose(workers("a", "b", "c"), {}).id)
    assert [load.of(w) for w in "abc"] == [2, 2, 2]


def test_unknown_policy_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="least-outstanding"):
        SelectionPolicy.make("no-such-policy", InFlight())


# prefix-affinity

SYSTEM = "You are a meticulous assistant for the lighthouse keepers' guild. " * 20  # ~1.3 k chars


def chat(system: str, user: str) -> dict[str, object]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def prefix_policy(load: InFlight, **options: Any) -> SelectionPolicy:
    return SelectionPolicy.make("prefix-affinity", load, PolicyOptions(**options))


def test_prefix_affinity_is_registered_and_takes_options() -> None:
    policy = prefix_policy(InFlight(), prefix_chars=512, min_prefix_chars=64)
    assert isinstance(policy, PrefixAffinity)
    assert policy.options.prefix_chars == 512


def test_requests_sharing_a_long_prefix_stick_to_one_worker() -> None:
    load = InFlight()
    policy = prefix_policy(load)
    pool = workers(*"abcdefgh")
    picks = {policy.choose(pool, chat(SYSTEM, f"question {i}")).id for i in range(50)}
    assert len(picks) == 1, "the first 1024 chars are all system prompt: one key"


def test_later_turns_of_a_conversation_follow_the_first() -> None:
    load = InFlight()
    policy = prefix_policy(load, min_prefix_chars=100)
    pool = workers(*"abcdefgh")
    first = chat("Be brief. " * 20, "Tell me about the lighthouse at Alexandria, please.")
    later: dict[str, object] = {
        "messages": [
            *first["messages"],  # type: ignore[misc]
            {"role": "assistant", "content": "It was one of the seven wonders."},
            {"role": "user", "content": "Who built it?"},
        ]
    }
    assert policy.choose(pool, first).id == policy.choose(pool, later).id


def test_distinct_prefixes_spread_over_the_workers() -> None:
    load = InFlight()
    policy = prefix_policy(load, min_prefix_chars=64)
    pool = workers(*"abcd")
    counts = Counter(
        policy.choose(pool, chat(f"System prompt number {i}. " * 10, "hi")).id for i in range(400)
    )
    assert set(counts) == set("abcd")
    assert all(60 <= n <= 140 for n in counts.values()), counts


def test_short_prompts_are_load_balanced_instead() -> None:
    load = InFlight()
    policy = prefix_policy(load)
    pool = workers(*"abc")
    picks = [policy.choose(pool, chat("short", "hi")).id for _ in range(30)]
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}


def test_an_overloaded_home_worker_sheds_to_the_least_loaded() -> None:
    load = InFlight()
    policy = prefix_policy(load, affinity_slack=4, affinity_factor=1.0)
    pool = workers(*"abcd")
    request = chat(SYSTEM, "q")
    home = policy.choose(pool, request).id
    for _ in range(4):
        load.start(home)
    assert policy.choose(pool, request).id == home, "within idlest + slack: still home"
    load.start(home)
    others = [w.id for w in pool if w.id != home]
    load.start(others[0])
    load.start(others[1])
    assert policy.choose(pool, request).id == others[2], "past the bound: least outstanding"


def test_the_bound_scales_with_load() -> None:
    load = InFlight()
    policy = prefix_policy(load, affinity_slack=4, affinity_factor=1.5)
    pool = workers(*"ab")
    request = chat(SYSTEM, "q")
    home = policy.choose(pool, request).id
    other = "b" if home == "a" else "a"
    for _ in range(40):
        load.start(other)
    for _ in range(60):
        load.start(home)
    assert policy.choose(pool, request).id == home, "60 <= 40 x 1.5"
    load.start(home)
    assert policy.choose(pool, request).id == other


def test_removing_a_worker_moves_only_its_own_prefixes() -> None:
    load = InFlight()
    policy = prefix_policy(load, min_prefix_chars=64)
    pool = workers(*"abcdef")
    requests = [chat(f"Tenant {i} has its own long system prompt. " * 4, "hi") for i in range(300)]
    before = [policy.choose(pool, r).id for r in requests]
    remaining = [w for w in pool if w.id != "c"]
    after = [policy.choose(remaining, r).id for r in requests]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert moved and all(b == "c" for b, _ in moved)
    assert len(moved) == before.count("c")
    assert rendezvous_rank(b"k", pool)[0].id == rendezvous_rank(b"k", list(reversed(pool)))[0].id


def test_affinity_prefix_stops_at_the_first_user_turn_and_the_limit() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "text", "text": "U"}, {"type": "image_url"}]},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert affinity_prefix(body, 1024) == "system\x1fS\x1euser\x1fU\x1e"
    assert affinity_prefix(body, 4) == "syst"
    assert affinity_prefix({"prompt": "abcdef"}, 3) == "abc"
    assert affinity_prefix({"prompt": [1, 2, 3]}, 3) == ""

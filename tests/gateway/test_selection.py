import pytest

from spotgate.fleet.worker import Worker, WorkerState
from spotgate.gateway.load import OutstandingRequests
from spotgate.gateway.selection import LeastOutstanding, SelectionPolicy


def workers(*ids: str) -> list[Worker]:
    return [
        Worker(id=i, pool="p", model="m", engine="sim", url="", state=WorkerState.READY)
        for i in ids
    ]


def test_least_outstanding_picks_the_idlest_worker() -> None:
    load = OutstandingRequests()
    policy = SelectionPolicy.make("least-outstanding", load)
    for _ in range(3):
        load.start("a")
    load.start("b")
    assert policy.choose(workers("a", "b", "c"), {}).id == "c"
    load.start("c")
    load.start("c")
    assert policy.choose(workers("a", "b", "c"), {}).id == "b"


def test_equal_workers_share_the_load_evenly() -> None:
    load = OutstandingRequests()
    policy = LeastOutstanding(load)
    picks = [policy.choose(workers("a", "b", "c"), {}).id for _ in range(300)]
    assert {w: picks.count(w) for w in "abc"} == {"a": 100, "b": 100, "c": 100}


def test_concurrent_requests_spread_across_workers() -> None:
    load = OutstandingRequests()
    policy = LeastOutstanding(load)
    for _ in range(6):
        load.start(policy.choose(workers("a", "b", "c"), {}).id)
    assert [load.of(w) for w in "abc"] == [2, 2, 2]


def test_unknown_policy_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="least-outstanding"):
        SelectionPolicy.make("no-such-policy", OutstandingRequests())

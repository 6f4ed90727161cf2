import pytest

from spotgate.clock import ManualClock
from spotgate.fleet.observation import observe_pool
from spotgate.fleet.registry import UnknownWorker, WorkerRegistry, WorkerRetired
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import Worker, WorkerState


def make_registry() -> tuple[WorkerRegistry, ManualClock, InMemoryWorkerStore]:
    clock = ManualClock()
    store = InMemoryWorkerStore()
    return WorkerRegistry(store, clock), clock, store


def register(registry: WorkerRegistry, worker_id: str, model: str = "m") -> None:
    registry.register(
        worker_id, pool="default", model=model, engine="sim", url=f"http://w/{worker_id}"
    )


def test_registered_worker_is_routable_for_its_model_only() -> None:
    registry, _, _ = make_registry()
    register(registry, "a", "m1")
    register(registry, "b", "m2")
    assert [w.id for w in registry.ready_for_model("m1")] == ["a"]
    assert registry.ready_for_model("unknown") == ()


def test_provisioning_worker_takes_no_traffic_until_it_registers() -> None:
    registry, _, _ = make_registry()
    registry.expect("a", pool="default", model="m", engine="sim")
    assert registry.ready_for_model("m") == ()
    register(registry, "a")
    assert [w.id for w in registry.ready_for_model("m")] == ["a"]


def test_draining_worker_leaves_routing_but_stays_listed_with_its_eviction() -> None:
    registry, clock, _ = make_registry()
    register(registry, "a")
    registry.drain("a", "spot eviction notice", event_id="E1", not_before=clock.now() + 30)
    assert registry.ready_for_model("m") == ()
    worker = registry.get("a")
    assert worker is not None and worker.state == WorkerState.DRAINING
    assert worker.eviction is not None and worker.eviction.event_id == "E1"


def test_a_draining_worker_that_re_registers_stays_draining() -> None:
    registry, _, _ = make_registry()
    register(registry, "a")
    registry.drain("a", "scale-in")
    register(registry, "a")
    assert registry.ready_for_model("m") == ()


def test_silent_worker_expires_after_the_heartbeat_timeout() -> None:
    registry, clock, _ = make_registry()
    register(registry, "a")
    register(registry, "b")
    clock.advance(4)
    registry.heartbeat("b", {"num_requests_running": 3})
    clock.advance(3)
    expired = registry.expire_stale(heartbeat_timeout_s=6)
    assert [w.id for w in expired] == ["a"]
    assert [w.id for w in registry.ready_for_model("m")] == ["b"]
    with pytest.raises(UnknownWorker):
        registry.heartbeat("a", None)


def test_gone_workers_are_forgotten_after_retention() -> None:
    registry, clock, store = make_registry()
    register(registry, "a")
    registry.mark_gone("a", "killed")
    clock.advance(301)
    registry.expire_stale(heartbeat_timeout_s=6)
    assert registry.get("a") is None and store.get("a") is None


def test_registry_reloads_its_state_from_the_store() -> None:
    registry, clock, store = make_registry()
    register(registry, "a")
    registry.drain("a", "scale-in")
    register(registry, "b")
    reloaded = WorkerRegistry(store, clock)
    assert {w.id: w.state for w in reloaded.all()} == {
        "a": WorkerState.DRAINING,
        "b": WorkerState.READY,
    }
    assert [w.id for w in reloaded.ready_for_model("m")] == ["b"]


def test_observation_counts_states_and_load_of_one_pool() -> None:
    registry, clock, _ = make_registry()
    register(registry, "a")
    register(registry, "b")
    registry.expect("c", pool="default", model="m", engine="sim")
    registry.register("x", pool="other", model="m", engine="sim", url="http://x")
    registry.heartbeat("a", {"num_requests_running": 2, "num_requests_waiting": 1})
    registry.drain("b", "evicted", event_id="E", not_before=None)
    seen = observe_pool(registry, "default", heartbeat_timeout_s=6, now=clock.now())
    counts = [seen.count(state) for state in ("ready", "draining", "provisioning")]
    assert counts == [1, 1, 1] and len(seen.signals.workers) == 3
    (a,) = [w for w in seen.signals.workers if w.worker_id == "a"]
    assert (a.running, a.waiting) == (2, 1)
    assert seen.evicting == ["b"]
    assert seen.actual == 2


def test_a_rebooted_worker_takes_traffic_again_when_its_agent_re_registers() -> None:
    registry, _, _ = make_registry()
    register(registry, "a")
    registry.drain("a", "scheduled event Reboot", event_id="E", event_type="Reboot")
    assert registry.ready_for_model("m") == ()
    register(registry, "a")
    assert [w.id for w in registry.ready_for_model("m")] == ["a"]


def test_a_preempted_worker_never_comes_back_by_re_registering() -> None:
    registry, _, _ = make_registry()
    register(registry, "a")
    registry.drain("a", "scheduled event Preempt", event_id="E", event_type="Preempt")
    register(registry, "a")
    assert registry.ready_for_model("m") == ()


def test_a_worker_the_monitor_retired_cannot_register_back() -> None:
    """Its agent may heartbeat once more before the VM dies; that must not revive it."""
    registry, _, _ = make_registry()
    register(registry, "a")
    registry.mark_gone("a", "deleted: drained")
    with pytest.raises(WorkerRetired) as caught:
        register(registry, "a")
    assert caught.value.status_code == 409 and caught.value.code == "worker_retired"
    gone = registry.get("a")
    assert gone is not None and gone.state == WorkerState.GONE


def test_a_worker_lost_by_accident_registers_back() -> None:
    registry, _, _ = make_registry()
    register(registry, "a")
    registry.mark_gone("a", "heartbeat timeout")
    register(registry, "a")
    back = registry.get("a")
    assert back is not None and back.state == WorkerState.READY


def test_absorb_takes_in_another_instances_changes_without_writing_them_back() -> None:
    """Two control-plane instances over one store: each sees the other's changes."""
    here, clock, store = make_registry()
    there = WorkerRegistry(InMemoryWorkerStore(), clock)
    register(here, "a")
    register(here, "b")
    there.absorb(here.all())
    clock.advance(1)
    there.drain("a", "scheduled event Preempt", event_id="E")  # the agent's report landed there
    seen: list[str] = []

    def heard(worker: Worker) -> None:
        seen.append(worker.state.value)

    here.subscribe(heard)

    changed = here.absorb([w for w in there.all() if w.id == "a"], removed=["b"])

    merged = here.get("a")
    assert [w.id for w in changed] == ["a"] and seen == ["draining"]
    assert merged is not None and merged.state == WorkerState.DRAINING
    assert merged is not there.get("a")  # a copy: the two instances share no objects
    assert here.ready_for_model("m") == ()  # routing stops at once on this instance too
    assert here.get("b") is None
    stored = store.get("a")
    assert stored is not None and stored.state == WorkerState.READY  # nothing written back

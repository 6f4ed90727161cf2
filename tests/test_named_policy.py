"""Policies registered by name: one registry per family, a new policy is one class."""

from __future__ import annotations

import re

import pytest

from spotgate.fleet.autoscaler import Autoscaler, QueueDepth
from spotgate.fleet.capacity_mix import CapacityMix, SpotFirst
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.selection import LeastOutstanding, SelectionPolicy
from spotgate.named_policy import NamedPolicy

# Families of this test's own, so nothing here adds to the real registries.


class Greeter(NamedPolicy, family="greeter"):
    def __init__(self, who: str = "world") -> None:
        self.who = who

    def greet(self) -> str:
        raise NotImplementedError


class Hello(Greeter, name="hello", default=True):
    def greet(self) -> str:
        return f"hello {self.who}"


class Shout(Greeter, name="shout"):
    def greet(self) -> str:
        return f"HELLO {self.who.upper()}"


class Counter(NamedPolicy, family="counter"):
    pass


class CountHello(Counter, name="hello"):
    pass


def test_a_new_policy_is_one_class() -> None:
    class Polite(NamedPolicy, family="polite greeter"):
        def greet(self) -> str:
            raise NotImplementedError

    assert Polite.names() == []

    class Bow(Polite, name="bow"):
        def greet(self) -> str:
            return "*bows*"

    assert Polite.names() == ["bow"]
    assert type(Polite.make("bow")) is Bow and Polite.make("bow").greet() == "*bows*"
    assert Bow.name == "bow"


def test_make_passes_the_arguments_on() -> None:
    assert Greeter.make("hello", "you").greet() == "hello you"
    assert Greeter.make("shout", who="you").greet() == "HELLO YOU"
    assert Greeter.lookup("shout") is Shout


def test_two_families_do_not_share_names() -> None:
    assert type(Greeter.make("hello")) is Hello
    assert type(Counter.make("hello")) is CountHello
    assert Greeter.names() == ["hello", "shout"]
    assert Counter.names() == ["hello"]
    with pytest.raises(ValueError, match="unknown counter 'shout'"):
        Counter.make("shout")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as raised:
        Greeter.make("wave")
    assert str(raised.value) == "unknown greeter 'wave'; known: hello, shout"


def test_no_name_means_the_default_where_the_family_has_one() -> None:
    assert Greeter.default == "hello"
    assert type(Greeter.make()) is Hello
    with pytest.raises(ValueError, match=r"^unknown counter None; known: hello$"):
        Counter.make()
    assert type(Greeter.make("")) is Hello


def test_a_name_is_taken_once_per_family() -> None:
    with pytest.raises(TypeError, match="greeter 'shout' is already"):

        class Louder(Greeter, name="shout"):
            pass

    assert Greeter.lookup("shout") is Shout


def test_a_family_has_one_default() -> None:
    with pytest.raises(TypeError, match="already defaults to 'hello'"):

        class Wave(Greeter, name="wave", default=True):
            pass

    assert Greeter.names() == ["hello", "shout"]


def test_a_policy_needs_a_name_and_a_family() -> None:
    with pytest.raises(TypeError, match="needs a name"):

        class Nameless(Greeter):
            pass

    with pytest.raises(TypeError, match="belongs to no family"):

        class Orphan(NamedPolicy, name="orphan"):
            pass


def test_a_policy_class_builds_only_its_own_kind() -> None:
    with pytest.raises(ValueError, match="'shout' is not a Hello"):
        Hello.make("shout")


# the three families the gateway and the fleet monitor use

FAMILIES: list[tuple[type[NamedPolicy], str, list[str], type[NamedPolicy] | None]] = [
    (SelectionPolicy, "selection policy", ["least-outstanding", "prefix-affinity"], None),
    (Autoscaler, "autoscaler", ["queue-depth"], QueueDepth),
    (
        CapacityMix,
        "capacity mix",
        ["on-demand-only", "spot-first", "spot-hedge", "spot-only"],
        SpotFirst,
    ),
]


@pytest.mark.parametrize(("family", "called", "names", "default"), FAMILIES)
def test_the_real_families(
    family: type[NamedPolicy], called: str, names: list[str], default: type[NamedPolicy] | None
) -> None:
    assert family.names() == names
    assert [family.lookup(name).name for name in names] == names
    message = f"unknown {called} 'nope'; known: {', '.join(names)}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        family.lookup("nope")
    if default is None:  # the settings name the policy; an empty name is an error
        with pytest.raises(ValueError, match=f"^unknown {called} ''"):
            family.lookup("")
    else:
        assert family.lookup() is default and family.lookup("") is default


def test_the_families_keep_the_make_calls_their_callers_use() -> None:
    load = InFlight()
    assert isinstance(SelectionPolicy.make("least-outstanding", load), LeastOutstanding)
    assert isinstance(Autoscaler.make(), QueueDepth)
    assert isinstance(Autoscaler.make("queue-depth", None), QueueDepth)
    assert isinstance(CapacityMix.make(None, None), SpotFirst)
    assert Autoscaler.default == "queue-depth" and CapacityMix.default == "spot-first"

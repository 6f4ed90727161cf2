"""Policies that register themselves by name, one registry per family.

A family is a base class that declares itself the root of one:

    class Autoscaler(NamedPolicy, family="autoscaler"): ...

and a policy is one class in it, registered when Python creates the class:

    class QueueDepth(Autoscaler, name="queue-depth", default=True): ...

after which `Autoscaler.make("queue-depth", config)` builds one, and
`Autoscaler.names()` lists them for settings and error messages. Each family
has its own registry, so a selection policy and an autoscaler may share a
name; an unknown name is a `ValueError` that lists the known ones. The shape
follows SkyPilot's `sky/serve/load_balancing_policies.py`.

Nothing here does I/O. A registry is filled by class definitions only, so
there is nothing for a test to reset: a test that needs policies of its own
declares its own family.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class NamedPolicy:
    """Base of every policy family; see the module docstring."""

    family: ClassVar[str]
    """What the family is called in messages, e.g. "selection policy"."""
    registry: ClassVar[dict[str, type[NamedPolicy]]]
    """The family's policies by name: one dict per family root."""
    name: ClassVar[str]
    """The name this policy is registered under."""
    default: ClassVar[str]
    """The name `make()` builds; unset in a family without a default."""

    def __init_subclass__(
        cls,
        *,
        family: str | None = None,
        name: str | None = None,
        default: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if family is not None:
            if name is not None or default:
                raise TypeError(f"{cls.__qualname__}: a family root is not itself a policy")
            cls.family = family
            cls.registry = {}
            return
        root = cls._root()
        if name is None:
            raise TypeError(f"{cls.__qualname__} needs a name: class X({root.__name__}, name=...)")
        taken = root.registry.get(name)
        if taken is not None and _qualified(taken) != _qualified(cls):
            raise TypeError(f"{root.family} {name!r} is already {_qualified(taken)}")
        if default and "default" in root.__dict__ and root.default != name:
            raise TypeError(f"{root.family} already defaults to {root.default!r}")
        cls.name = name
        root.registry[name] = cls
        if default:
            root.default = name

    @classmethod
    def _root(cls) -> type[NamedPolicy]:
        for klass in cls.__mro__:
            if issubclass(klass, NamedPolicy) and "registry" in klass.__dict__:
                return klass
        raise TypeError(
            f"{cls.__qualname__} belongs to no family: "
            "subclass a family root, e.g. class Family(NamedPolicy, family=...)"
        )

    @classmethod
    def names(cls) -> list[str]:
        """The family's policy names, sorted."""
        return sorted(cls._root().registry)

    @classmethod
    def lookup(cls, name: str | None = None) -> type[Self]:
        """The policy class registered as `name`; no name means the family's default, if any."""
        root = cls._root()
        if not name and "default" in root.__dict__:
            name = root.default
        policy = root.registry.get(name) if name else None
        if policy is None:
            known = ", ".join(cls.names())
            raise ValueError(f"unknown {root.family} {name!r}; known: {known}")
        if not issubclass(policy, cls):
            raise ValueError(f"{root.family} {name!r} is not a {cls.__qualname__}")
        return policy

    @classmethod
    def make(cls, name: str | None = None, *args: Any, **kwargs: Any) -> Self:
        """A new instance of the policy named `name`, built with the remaining arguments."""
        return cls.lookup(name)(*args, **kwargs)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

"""A circuit breaker per worker: stop sending requests to a worker that keeps failing.

One failed request is weak evidence (a 503 under load, a reset connection),
so a worker is taken out only after `failure_threshold` consecutive failures.
A fatal failure is strong evidence the worker is gone (a refused connection:
nothing listens; a connection lost mid-response: the process or VM died
under a request), so it opens the breaker at once. An open breaker lets the worker
rest for a cooldown, then lets exactly one trial request through (half-open):
its success closes the breaker, its failure reopens it for twice as long, up
to `max_cooldown_s`, so a dead worker costs one request per cooldown, not one
per client request.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


def is_connection_refused(exc: BaseException) -> bool:
    """True when `exc` or what caused it says nothing listens on the worker's port.

    The upstream adapters wrap the OS error in `WorkerUnreachable` (`raise ... from`);
    aiohttp wraps it once more and keeps it as `os_error`.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(getattr(current, "os_error", None), ConnectionRefusedError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class CircuitBreaker:
    """The breaker of one worker; times are the caller's clock readings in seconds."""

    __slots__ = (
        "_cooldown_s",
        "_max_cooldown_s",
        "_threshold",
        "_trial_timeout_s",
        "cooldown_s",
        "failures",
        "opened_at",
        "state",
        "trial_started",
    )

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        trial_timeout_s: float | None = None,
    ) -> None:
        """`trial_timeout_s` (default: the cooldown) frees the half-open slot if the trial
        request never reports back, e.g. because its client went away mid-request."""
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max(cooldown_s, max_cooldown_s)
        self._trial_timeout_s = cooldown_s if trial_timeout_s is None else trial_timeout_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.cooldown_s = cooldown_s
        self.trial_started: float | None = None

    def current(self, now: float) -> BreakerState:
        """The state at `now`: an open breaker whose cooldown ran out turns half-open."""
        if self.state is BreakerState.OPEN and now >= self.opened_at + self.cooldown_s:
            self.state = BreakerState.HALF_OPEN
            self.trial_started = None
        return self.state

    def allows(self, now: float) -> bool:
        state = self.current(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        started = self.trial_started
        return started is None or now - started >= self._trial_timeout_s

    def attempt(self, now: float) -> None:
        """A request is being sent: when half-open, it is the one trial."""
        if self.current(now) is BreakerState.HALF_OPEN:
            self.trial_started = now

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.cooldown_s = self._cooldown_s
        self.trial_started = None

    def failed(self, now: float, *, fatal: bool = False) -> None:
        state = self.current(now)
        if state is BreakerState.HALF_OPEN:
            self._open(now, min(self.cooldown_s * 2, self._max_cooldown_s))
        elif state is BreakerState.OPEN:
            self.opened_at = now  # still failing (a probe, a straggler): rest from now
        else:
            self.failures += 1
            if fatal or self.failures >= self._threshold:
                self._open(now, self._cooldown_s)

    def _open(self, now: float, cooldown_s: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.cooldown_s = cooldown_s
        self.trial_started = None

"""What an ARM failure means for the caller: a capacity refusal, a busy ARM, or a real error.

Retrying is azure-core's job: its retry policy, configured with
`RETRY_DEFAULTS`, already repeats 408/429/500/502/503/504 (PATCH and POST
too, for 500/503/504) and honours `Retry-After`. What reaches us after that
has exhausted its attempts, so we never loop again here: a still-throttled or
still-unavailable ARM becomes one `ArmTransientError`, which the fleet
monitor can tell apart from a bug and simply try on its next tick.

ARM spells one failure in several places: the error of a synchronous answer
(`{"error": {...}}`), the error of a failed async operation
(`{"status": "Failed", "error": {...}}`), and sometimes the telling code only
in `error.details` (a generic outer code wrapping `SkuNotAvailable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from spotgate.fleet.compute import capacity_reason

# azure-core's retry settings for the management client; tests pass small ones.
RETRY_DEFAULTS: dict[str, Any] = {
    "retry_total": 5,
    "retry_backoff_factor": 0.8,
    "retry_backoff_max": 30,
    # Scale-outs take minutes; ARM's own Retry-After, when sent, wins over this.
    "polling_interval": 15,
}

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# Codes ARM and the compute RP use for "not now" rather than "no".
_TRANSIENT_CODES = {
    "toomanyrequests",
    "subscriptionrequeststhrottled",
    "resourcegrouprequeststhrottled",
    "tenantrequeststhrottled",
    "retryableerror",
    "servertimeout",
    "serviceunavailable",
    "gatewaytimeout",
    "internalservererror",
}


class ArmTransientError(Exception):
    """ARM stayed throttled or unavailable through every retry; nothing to fix but waiting."""

    def __init__(self, message: str, *, status: int | None, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _errors(err: HttpResponseError) -> list[tuple[str | None, str]]:
    """(code, message) of the error and of each of its details, outermost first."""
    odata = err.error
    if odata is None:
        return [(None, str(err.message or err))]
    found = [(odata.code, odata.message or "")]
    found += [(d.code, d.message or "") for d in (odata.details or [])]
    return found


def arm_code(err: HttpResponseError) -> str | None:
    return _errors(err)[0][0]


def capacity_refusal(err: HttpResponseError) -> tuple[str, str, str] | None:
    """(reason, code, message) when ARM refused for lack of capacity, looking into details too."""
    for code, message in _errors(err):
        reason = capacity_reason(code, message)
        if reason is not None:
            return reason, code or "", message
    return None


def _is_transient(err: HttpResponseError) -> bool:
    if err.status_code in _TRANSIENT_STATUS:
        return True
    return any((code or "").lower() in _TRANSIENT_CODES for code, _ in _errors(err))


@contextlib.contextmanager
def surfacing_transient(operation: str) -> Iterator[None]:
    """Turns what is left of a throttled or unreachable ARM into one ArmTransientError."""
    try:
        yield
    except HttpResponseError as err:
        if not _is_transient(err):
            raise
        code = arm_code(err)
        raise ArmTransientError(
            f"{operation}: ARM still answers {err.status_code} {code or ''} after retries: "
            f"{_errors(err)[0][1]}",
            status=err.status_code,
            code=code,
        ) from err
    except (ServiceRequestError, ServiceResponseError) as err:
        raise ArmTransientError(
            f"{operation}: ARM unreachable after retries: {err}",
            status=None,
            code=None,
        ) from err


def is_gone(err: AzureError) -> bool:
    """The scale set, or the instance asked for, no longer exists."""
    if not isinstance(err, HttpResponseError):
        return False
    if err.status_code == 404:
        return True
    # deleteInstances answers 400 InvalidParameter for an instance id that is already gone.
    return any(
        (code or "").lower() == "invalidparameter" and "not an active" in message.lower()
        for code, message in _errors(err)
    )


def instance_may_be_gone(err: HttpResponseError) -> bool:
    """deleteInstances refused over the instances it was given: some may be gone already.

    Beyond `is_gone`, any 400 InvalidParameter aimed at `instanceIds`: the
    compute RP's wording for a Flexible scale set's vanished VM name is not
    documented, so the caller re-lists and retries with the live ones, and
    re-raises when every one of them is still there.
    """
    if is_gone(err):
        return True
    odata = err.error
    return (
        err.status_code == 400
        and odata is not None
        and (odata.code or "").lower() == "invalidparameter"
        and (odata.target or "").lower() == "instanceids"
    )

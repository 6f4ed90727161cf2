"""What a worker registration may claim: where it is, and that it is who it says.

The fleet token is shared by every agent, so on its own it proves only
"some agent of this fleet". A registration names the URL the gateway will
send clients' prompts to, so it is checked against what the fleet manager
itself knows:

- the URL is `http(s)://<IP literal>[:port]` inside the allowed networks
  (the workers' subnet on Azure, loopback locally): no hostname to re-resolve
  later, no metadata or other private address, no other scheme;
- the id is an instance the fleet manager provisioned (or adopted from the
  cloud's listing), and the URL's address is the one the compute provider
  reports for it;
- a live worker's URL never changes, and only the holder of the credential
  handed out at registration may register it again, heartbeat for it or
  report its eviction.

`WorkerRegistry.register` applies the identity rules; this module holds the
address rules and the credential helpers, pure and with no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from spotgate.errors import InvalidRequest, OpenAIError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class WorkerAddress:
    """A registration URL taken apart; `url` is its normalised form (no trailing slash)."""

    url: str
    ip: IPAddress
    port: int

    def matches(self, expected: str) -> bool:
        """`expected` is what the compute provider reported: "ip" or "ip:port"."""
        host, port = split_address(expected)
        return ipaddress.ip_address(host) == self.ip and (port is None or port == self.port)


def split_address(address: str) -> tuple[str, int | None]:
    """("10.0.1.4", None) from "10.0.1.4"; ("::1", 8000) from "[::1]:8000"."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, None


def join_address(ip: str, port: int | None) -> str:
    if port is None:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def check_worker_url(url: str, networks: Iterable[IPNetwork]) -> WorkerAddress:
    """The URL's address if a worker may be reached there; a 400 naming `url` if not."""

    def refuse(why: str) -> InvalidRequest:
        return InvalidRequest(
            f"'url' is not an allowed worker address: {why}.", param="url", code="invalid_url"
        )

    if any(c <= " " or c == "\x7f" for c in url):
        raise refuse("it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise refuse("only http and https are allowed")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the URL are not allowed")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise refuse("it must be a bare origin (scheme, address, port)")
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise refuse("the host must be an IP address, not a name") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    allowed = list(networks)
    if not any(ip in net for net in allowed if net.version == ip.version):
        names = ", ".join(str(n) for n in allowed) or "none"
        raise refuse(f"{ip} is outside the worker networks ({names})")
    port = port or (443 if parts.scheme == "https" else 80)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return WorkerAddress(f"{parts.scheme}://{host}:{port}", ip, port)


class RegistrationRefused(OpenAIError):
    """A registration that does not match what the fleet manager provisioned."""

    status_code = 403
    error_type = "permission_error"


class RegistrationConflict(OpenAIError):
    """The worker is registered and live: only its own agent (its credential) may re-register."""

    status_code = 409
    error_type = "invalid_request_error"


class CredentialRejected(OpenAIError):
    """A heartbeat or report for a worker without that worker's credential; the agent
    re-registers on this code."""

    status_code = 409
    error_type = "invalid_request_error"

    def __init__(self, worker_id: str) -> None:
        super().__init__(
            f"This agent does not hold the credential of worker '{worker_id}'; register again.",
            code="worker_credential_invalid",
        )


def new_credential() -> tuple[str, str]:
    """A worker credential and the digest the registry keeps instead of it."""
    token = secrets.token_urlsafe(32)
    return token, credential_digest(token)


def credential_digest(token: str) -> str:
    return hashlib.sha256(b"spotgate-worker\0" + token.encode()).hexdigest()


def credential_matches(token: str | None, digest: str | None) -> bool:
    if not token or not digest:
        return False
    return hmac.compare_digest(credential_digest(token), digest)

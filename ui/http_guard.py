"""Who may talk to a local server: the DNS-rebinding and cross-site guard of `r1 serve` and `r1 ui`.

A web page cannot choose the Host header its browser sends: after a DNS rebinding attack it still names the
attacker's domain, though the name now resolves to 127.0.0.1. So a request is served only when its Host names
the address the server is bound to, `localhost` or a loopback address, or one of the `allowed_hosts`
(`--allowed-host`, R1_ALLOWED_HOSTS: the names a reverse proxy or a LAN uses). A server bound to every interface
(0.0.0.0, ::) also takes any IP address: a rebinding attack always arrives under a name.

A request that can change something (any method but GET, HEAD and OPTIONS, and every WebSocket) that carries an
Origin header must also come from a page of an allowed host: a cross-site page may send a "simple" POST without
a preflight, and although it cannot read the answer, the request still runs. Programs (curl, the openai client)
send no Origin and pass. This is what Jupyter's and Ollama's fixes do.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from model.backends.openai_protocol import error_body

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})


def _hostname(netloc: str) -> str:
    """The host part of a Host header or an Origin's netloc: no port, no IPv6 brackets, lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


class HostGuard:
    """ASGI middleware: refuses (403) a request whose Host, or a state-changing request whose Origin, names a
    host this server does not answer to."""

    def __init__(self, app: ASGIApp, *, bound_host: str, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.bound_host = _hostname(bound_host)
        self.allowed = {_hostname(h) for h in allowed_hosts} | {"localhost", self.bound_host}

    def allows(self, host: str) -> bool:
        """Whether `host` (a Host header value or a bare name) names this server."""
        name = _hostname(host)
        if name in self.allowed:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.bound_host in WILDCARD_ADDRESSES

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        if host is None or not self.allows(host):
            return (
                f"the Host header {host!r} does not name this server; start it with --allowed-host NAME to "
                "accept that name"
            )
        origin = headers.get("origin")
        changes_state = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if origin is not None and changes_state:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not self.allows(parts.netloc):
                return f"cross-site request refused: the Origin {origin!r} is not this server"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (why := self.refusal(scope)) is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
            return
        body = json.dumps(error_body(why, code="forbidden_host")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

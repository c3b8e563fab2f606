"""Who may use the console, and the checks every request passes.

* **Token** (``DATAFORGE_API_TOKEN``): the JSON API and ``/metrics`` need
  ``Authorization: Bearer <token>``; pages need a session made by the login form (or the same
  header). Tokens are compared in constant time and never logged; a query-string token is
  not accepted (URLs end up in access logs and browser history).
* **No token**: the console must listen on loopback only (:func:`check_bind`, enforced by
  ``dataforge serve``), and requests must name a loopback ``Host``: a web page the operator
  visits cannot reach the console through a DNS name rebound to 127.0.0.1.
* **Cross-site writes**: a state-changing request that a browser marks as coming from another
  site (``Origin`` of another host, ``Sec-Fetch-Site: cross-site``) is refused, and page forms
  carry a CSRF token bound to the session. The session cookie is HttpOnly and
  SameSite=Strict, signed with a key derived from the token (a new token ends every session).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from dataforge.settings import Settings
from dataforge.web.errors import UnsafeBindError

__all__ = [
    "CSRF_FIELD",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE",
    "Guard",
    "LoginRequired",
    "check_bind",
    "is_loopback",
    "require_api",
    "require_form",
    "require_page",
]

log = logging.getLogger("dataforge.web")

SESSION_COOKIE: Final = "dataforge_session"
#: A login lasts a working day.
SESSION_MAX_AGE: Final = 12 * 3600
#: The hidden form field carrying the CSRF token.
CSRF_FIELD: Final = "csrf_token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``: reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (:class:`UnsafeBindError`) to listen beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise UnsafeBindError(host)


def _digest(value: str) -> bytes:
    # Hashing first makes the comparison's time independent of the lengths too.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Guard:
    """The console's credentials: the token (if any) and the session signing key."""

    token: str | None = field(repr=False)
    session_key: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        token = settings.api_token
        if token is None:
            # Nothing to derive from: sessions (CSRF tokens only) last as long as the process.
            return cls(None, secrets.token_hex(32))
        key = hmac.new(token.encode(), b"dataforge web session key", hashlib.sha256).hexdigest()
        return cls(token, key)

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_matches(self, given: str | None) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(_digest(given), _digest(self.token))

    def bearer(self, request: Request) -> bool:
        """The request carries ``Authorization: Bearer <the token>``."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def host_allowed(self, request: Request) -> bool:
        if self.required:
            return True
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        return is_loopback(host)

    def logged_in(self, request: Request) -> bool:
        return not self.required or request.session.get("auth") is True or self.bearer(request)

    def log_in(self, request: Request, given: str) -> bool:
        if not self.token_matches(given):
            client = request.client.host if request.client else "?"
            log.warning("console: refused a login from %s (wrong token)", client)
            return False
        request.session.clear()
        request.session["auth"] = True
        request.session["csrf"] = secrets.token_urlsafe(32)
        return True

    def csrf_token(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return token

    def csrf_ok(self, request: Request, given: object) -> bool:
        expected = request.session.get("csrf")
        return isinstance(expected, str) and isinstance(given, str) and hmac.compare_digest(
            _digest(given), _digest(expected)
        )


def _same_site(request: Request) -> bool:
    """False when a browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def _guard(request: Request) -> Guard:
    guard = request.app.state.guard
    assert isinstance(guard, Guard)
    return guard


def _common(request: Request, guard: Guard) -> None:
    if not guard.host_allowed(request):
        raise HTTPException(400, "without DATAFORGE_API_TOKEN the console answers loopback Host names only "
                                 "(127.0.0.1, localhost, [::1])")
    if request.method not in _SAFE_METHODS and not _same_site(request):
        raise HTTPException(403, "cross-site request refused")


def require_api(request: Request) -> None:
    """Dependency of /api/* and /metrics: the bearer token when one is configured."""
    guard = _guard(request)
    _common(request, guard)
    if guard.required and not guard.bearer(request):
        raise HTTPException(401, "send Authorization: Bearer <DATAFORGE_API_TOKEN>",
                            headers={"WWW-Authenticate": "Bearer"})


class LoginRequired(Exception):
    """A page was asked for without a session; the app answers with a redirect to the login
    form (control flow, not a refusal)."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def require_page(request: Request) -> None:
    """Dependency of the pages: a logged-in session (or the bearer header)."""
    guard = _guard(request)
    _common(request, guard)
    if not guard.logged_in(request):
        # After the login the browser GETs the target: a form's action is not a page.
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target if request.method == "GET" else "/schedules")


async def require_form(request: Request) -> None:
    """Dependency of the pages' POST forms: a session and its CSRF token."""
    require_page(request)
    form = await request.form()
    if not _guard(request).csrf_ok(request, form.get(CSRF_FIELD)):
        raise HTTPException(403, "the form's CSRF token is missing or stale; reload the page and try again")

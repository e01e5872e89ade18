"""Sign-in, sessions and CSRF for the dashboard.

The sign-in form takes the user token once; the browser then holds only a random
session id in an ``HttpOnly``, ``SameSite=Strict`` cookie (never the token, which no
page ever contains). Each session has its own CSRF token, put in every form that
changes state and checked on the post. A session ends when the user token is rotated
(the session remembers a hash of the token it was opened with), after
:data:`SESSION_TTL_S`, or on sign-out. Only the user token opens a session: a node
credential, a join token or the operator token is refused like any wrong token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

COOKIE = "shoal_session"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000  # the oldest are dropped past it


class Limiter(Protocol):
    """Counts failed sign-ins per source address (the coordinator's AuthLimiter)."""

    def retry_after(self, source: str) -> int | None:
        """Seconds ``source`` must wait, or None."""
        ...

    def failed(self, source: str) -> bool:
        """Count a failure of ``source``; True when it is now refused."""
        ...


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """One signed-in browser."""

    sid: str
    csrf: str
    token_digest: str
    expires: float


class Sessions:
    """The signed-in browsers of one dashboard.

    Parameters
    ----------
    user_token
        Returns the current user token (read at each check, so a rotation ends every
        session opened with the old one).
    limiter
        Counts failed sign-ins (None: no limit).
    """

    def __init__(self, user_token: Callable[[], str], limiter: Limiter | None = None) -> None:
        self._user_token = user_token
        self.limiter = limiter
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the user token (in constant time)."""
        return hmac.compare_digest(token.encode(), self._user_token().encode())

    def open(self, token: str) -> Session | None:
        """A new session for the user token; None for any other token."""
        if not token or not self.token_ok(token):
            return None
        session = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            _digest(token),
            time.time() + SESSION_TTL_S,
        )
        with self._lock:
            self._sessions[session.sid] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session with id ``sid``, or None."""
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
        if session is None:
            return None
        current = _digest(self._user_token())
        if session.expires < time.time() or not hmac.compare_digest(session.token_digest, current):
            self.close(sid)
            return None
        return session

    def close(self, sid: str) -> None:
        """End a session (sign-out)."""
        with self._lock:
            self._sessions.pop(sid, None)

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        """Whether a form's CSRF field is the session's."""
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())

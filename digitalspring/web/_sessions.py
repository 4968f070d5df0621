# -*- test-case-name: tests.test_web -*-
"""
Who may use the web client: one-time login tokens, and the sessions they
open.

``dspring web`` asks the node for a login URL holding a fresh token
(:meth:`Sessions.new_login`); opening it consumes the token and opens a
session (:meth:`Sessions.login`), whose random ID the browser keeps in an
HttpOnly cookie and whose CSRF token the page sends with every state
change.  Both are bounded: at most :data:`MAX_LOGINS` tokens wait, each for
:data:`LOGIN_LIFETIME` seconds, and at most :data:`MAX_SESSIONS` sessions are
open, the one used longest ago closed for a new one; a session unused for
:data:`SESSION_IDLE` seconds is closed.  Nothing is kept on disk: a node
that restarts forgets every session.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from typing import Any

from attrs import frozen

#: Login tokens waiting to be used; one more replaces the oldest.
MAX_LOGINS = 8

#: Seconds a login token may wait to be used.
LOGIN_LIFETIME = 300.0

#: Sessions open at once; one more closes the one used longest ago.
MAX_SESSIONS = 8

#: Seconds a session may go unused before it is closed.
SESSION_IDLE = 12 * 3600.0


@frozen
class Session:
    """
    One logged-in browser.

    :ivar session_id: what its cookie holds.
    :ivar csrf: what it sends in ``X-CSRF-Token`` with every state change.
    """

    session_id: str
    csrf: str

    def csrf_matches(self, offered: bytes | None) -> bool:
        """
        Whether ``offered`` is this session's CSRF token (compared in
        constant time).
        """
        return offered is not None and hmac.compare_digest(offered, self.csrf.encode("ascii"))


class Sessions:
    """
    The login tokens and sessions of one web client, in memory.

    :param clock: gives ``seconds()`` (the reactor, or a ``task.Clock``).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        #: token -> when it stops being valid, oldest first.
        self._logins: OrderedDict[str, float] = OrderedDict()
        #: session ID -> (session, last used), used longest ago first.
        self._sessions: OrderedDict[str, tuple[Session, float]] = OrderedDict()

    def new_login(self) -> str:
        """
        A fresh one-time login token.
        """
        now = self._clock.seconds()
        self._expire(now)
        while len(self._logins) >= MAX_LOGINS:
            self._logins.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._logins[token] = now + LOGIN_LIFETIME
        return token

    def login(self, token: str) -> Session | None:
        """
        Consume a login token and open a session; ``None`` for a token
        that is unknown, used already or expired.
        """
        now = self._clock.seconds()
        self._expire(now)
        found = None
        for known in self._logins:
            if hmac.compare_digest(known.encode("ascii"), token.encode("utf-8")):
                found = known
        if found is None:
            return None
        del self._logins[found]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[session.session_id] = (session, now)
        return session

    def session(self, session_id: str | None) -> Session | None:
        """
        The open session whose cookie holds ``session_id``, marked used
        now; ``None`` when there is none.
        """
        if not session_id:
            return None
        now = self._clock.seconds()
        self._expire(now)
        found = self._sessions.get(session_id)
        if found is None:
            return None
        self._sessions[session_id] = (found[0], now)
        self._sessions.move_to_end(session_id)
        return found[0]

    def logout(self, session_id: str) -> None:
        """
        Close a session.
        """
        self._sessions.pop(session_id, None)

    @property
    def open_sessions(self) -> int:
        self._expire(self._clock.seconds())
        return len(self._sessions)

    @property
    def waiting_logins(self) -> int:
        self._expire(self._clock.seconds())
        return len(self._logins)

    def _expire(self, now: float) -> None:
        for token, until in list(self._logins.items()):
            if until <= now:
                del self._logins[token]
        for session_id, (_, used) in list(self._sessions.items()):
            if used + SESSION_IDLE <= now:
                del self._sessions[session_id]

# -*- test-case-name: tests.test_control -*-
"""
Event streams of the control API: Server-Sent Events
(``text/event-stream``) that a route writes to for as long as the client
keeps the connection open.

Each stream is bounded: the events it holds while its client does not read
(:data:`MAX_QUEUED_BYTES`; past it the stream is closed, and the client
reconnects and reads the history), and the streams open at once
(:data:`MAX_STREAMS`, counted by the API).  A comment every
:data:`KEEPALIVE` seconds shows a client the node is there, and shows the
node a client that is gone.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

#: Event streams open at once; one more is answered 503.
MAX_STREAMS = 8

#: Bytes of events a stream holds for a client that does not read them;
#: past this, the stream is closed.
MAX_QUEUED_BYTES = 4 * 1024 * 1024

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE = 30.0


@implementer(IPushProducer)
class EventSink:
    """
    Where a stream route sends its events: one open ``text/event-stream``
    response.

    Events sent before the stream has started (while its route is still
    subscribing) or while the client's connection is full wait in a queue
    of at most :data:`MAX_QUEUED_BYTES`; one more closes the stream.
    """

    def __init__(self, reactor: Any, request: Request) -> None:
        self._reactor = reactor
        self._request = request
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._started = False
        self._paused = False
        self.closed = False
        self._keepalive: IDelayedCall | None = None

    def send(self, event: str, data: dict[str, Any]) -> None:
        """
        Send one event: ``event: EVENT`` and ``data:`` its JSON, on one line.
        """
        self._write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    def start(self) -> None:
        """
        Answer the request as an event stream, and send what waits.
        """
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.registerProducer(self, True)
        self._started = True
        self._write(b": ready\n\n")
        self.resumeProducing()

    def close(self) -> None:
        """
        End the stream.
        """
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        request = self._request
        if not request.finished and request.channel is not None:
            if self._started:
                request.unregisterProducer()
                request.finish()
            else:
                request.loseConnection()

    def _write(self, frame: bytes) -> None:
        if self.closed:
            return
        if not self._started or self._paused or self._queue:
            self._queue.append(frame)
            self._queued += len(frame)
            if self._queued > MAX_QUEUED_BYTES:
                self.close()
            return
        self._request.write(frame)
        self._schedule_keepalive()

    def _schedule_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.reset(KEEPALIVE)
        else:
            self._keepalive = self._reactor.callLater(KEEPALIVE, self._write, b": keepalive\n\n")

    # IPushProducer: the connection says when its buffer is full.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused and not self.closed:
            frame = self._queue.popleft()
            self._queued -= len(frame)
            self._request.write(frame)
        if not self.closed:
            self._schedule_keepalive()

    def stopProducing(self) -> None:
        self.close()


#: A stream route: given the request's query (one value per name) and the
#: sink, it subscribes the sink to its events and returns the function that
#: unsubscribes it.  It raises a ``DigitalSpringError`` for a query it
#: refuses, which is answered as a plain route's error.
StreamHandler = Callable[[dict[str, str], EventSink], Coroutine[Any, Any, Callable[[], None]]]

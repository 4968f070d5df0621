# -*- test-case-name: tests.test_tornet -*-
"""
A Linux network namespace with nothing but a loopback interface.

The private Tor test network runs inside one so that no packet can leave the
machine: left alone, tor makes a UDP ``connect()`` to 18.0.0.1 to guess its
own address and relays resolve names through ``/etc/resolv.conf``.  In a
namespace whose only interface is ``lo`` there is no route anywhere else, so
the kernel refuses such traffic before it exists.

``unshare(CLONE_NEWNET)`` and ``setns`` change the network namespace of the
*calling thread* only (they are allowed in a multi-threaded process).  A
socket stays in the namespace it was created in, and a child process starts
in the namespace of the thread that spawned it.  So the reactor thread enters
the namespace whenever it spawns a tor or opens a socket that must reach one,
and goes back to the original namespace otherwise: code that runs between Tor
tests sees the normal network.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from attrs import define, field
from twisted.logger import Logger

from digitalspring.errors import DigitalSpringError

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH14s"

_THREAD_NS = "/proc/thread-self/ns/net"


class NamespaceUnavailable(DigitalSpringError):
    """
    This process cannot create a network namespace: it needs Linux and root
    (CAP_SYS_ADMIN); the Tor test network then relies on its torrc settings
    alone to stay on 127.0.0.1.
    """


class WrongThread(DigitalSpringError):
    """
    A network namespace was entered or left from a thread other than the one
    that created it; namespaces belong to threads, so this would move the
    wrong thread.
    """


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _bring_loopback_up() -> None:
    """
    Set ``IFF_UP`` on ``lo`` in the calling thread's network namespace: a
    fresh namespace has ``lo`` down, and 127.0.0.1 unusable.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(_IFREQ, b"lo", 0, b"")
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP, b""))


@define
class NetworkNamespace:
    """
    A network namespace with only ``lo``, created by and for one thread (the
    reactor thread).

    Use :meth:`create`, then :meth:`entered` around anything that must live
    in the namespace: spawning a process, creating a socket.  Nested
    :meth:`entered` blocks are fine.

    :ivar inode: the namespace's inode number, as in ``/proc/PID/ns/net``.
    """

    _inside: int
    _outside: int
    _thread: int
    inode: int
    _depth: int = field(default=0)
    _closed: bool = field(default=False)

    log = Logger()

    @classmethod
    def create(cls) -> NetworkNamespace:
        """
        Create a new network namespace with ``lo`` up, without leaving the
        caller in it.

        :raises NamespaceUnavailable: if the system or our privileges do not
            allow it.
        """
        try:
            outside = os.open(_THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise NamespaceUnavailable(f"cannot open {_THREAD_NS}: {e}") from e
        try:
            failed = _libc().unshare(CLONE_NEWNET) != 0
        except AttributeError as e:  # no unshare in this libc
            os.close(outside)
            raise NamespaceUnavailable(f"unshare is unavailable: {e}") from e
        if failed:
            code = ctypes.get_errno()
            os.close(outside)
            raise NamespaceUnavailable(f"unshare(CLONE_NEWNET): {os.strerror(code)}")
        # This thread is now inside the new namespace: whatever happens next,
        # put it back where it was.
        inside = -1
        try:
            inside = os.open(_THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
            _bring_loopback_up()
        except OSError as e:
            _setns(outside)
            os.close(outside)
            if inside >= 0:
                os.close(inside)
            raise NamespaceUnavailable(f"cannot set up the namespace: {e}") from e
        _setns(outside)
        namespace = cls(inside, outside, threading.get_ident(), os.fstat(inside).st_ino)
        cls.log.info("created network namespace net:[{inode}] with only lo up",
                     inode=namespace.inode)
        return namespace

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise WrongThread("network namespace used from another thread")
        if self._closed:
            raise DigitalSpringError("network namespace already closed")

    def enter(self) -> None:
        """
        Move the calling thread into the namespace (or stay there if it
        already is).
        """
        self._check_thread()
        if self._depth == 0:
            _setns(self._inside)
        self._depth += 1

    def leave(self) -> None:
        """
        Undo one :meth:`enter`; the last one moves the thread back to the
        namespace it was in when :meth:`create` ran.
        """
        self._check_thread()
        if self._depth <= 0:
            raise DigitalSpringError("leaving a network namespace that was not entered")
        self._depth -= 1
        if self._depth == 0:
            _setns(self._outside)

    @contextmanager
    def entered(self) -> Iterator[NetworkNamespace]:
        """
        Run the body of a ``with`` block inside the namespace.
        """
        self.enter()
        try:
            yield self
        finally:
            self.leave()

    @property
    def is_entered(self) -> bool:
        """
        Whether the calling thread is inside the namespace right now.
        """
        return os.stat(_THREAD_NS).st_ino == self.inode

    def contains_pid(self, pid: int) -> bool:
        """
        Whether process ``pid`` lives in this namespace.
        """
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self.inode
        except FileNotFoundError:
            return False

    def interfaces(self) -> list[str]:
        """
        The names of the network interfaces inside the namespace.
        """
        with self.entered():
            with open("/proc/thread-self/net/dev") as f:
                lines = f.read().splitlines()[2:]
        return [line.split(":", 1)[0].strip() for line in lines]

    def has_route_to(self, address: str) -> bool:
        """
        Whether the kernel inside the namespace has a route to IPv4
        ``address``.  This asks the routing table through a UDP ``connect``,
        which never sends a packet.
        """
        with self.entered(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((address, 9))
            except OSError as e:
                if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                    return False
                raise
        return True

    def close(self) -> None:
        """
        Release our references to the namespace.  It disappears once no
        process lives in it any more.
        """
        if self._closed:
            return
        self._check_thread()
        if self._depth:
            self._depth = 0
            _setns(self._outside)
        os.close(self._inside)
        os.close(self._outside)
        self._closed = True


@contextmanager
def inside(namespace: NetworkNamespace | None) -> Iterator[None]:
    """
    Run the body of a ``with`` block inside ``namespace``, or where we are
    if it is ``None``.
    """
    if namespace is None:
        yield
        return
    with namespace.entered():
        yield


def isolated_namespace_or_none() -> NetworkNamespace | None:
    """
    Create a loopback-only network namespace if this process may, or say
    loudly that the Tor test network will run without one.

    :returns: the namespace, or ``None`` when namespaces are unavailable.
    """
    try:
        return NetworkNamespace.create()
    except NamespaceUnavailable as e:
        NetworkNamespace.log.warn(
            "Tor test network runs WITHOUT a network namespace ({reason}); only its "
            "torrc settings keep tor on 127.0.0.1. Run the tests as root to isolate it.",
            reason=str(e),
        )
        return None

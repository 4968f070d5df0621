# -*- test-case-name: tests.test_tornet -*-
"""
Keys for the private Tor network's authorities and relays, generated with
``tor-gencert`` and ``tor --list-fingerprint`` and cached as a template
between runs (key generation costs seconds; copying a template, nothing).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from digitalspring.testing._torcontrol import Reactor
from digitalspring.testing._tornamespace import NetworkNamespace
from digitalspring.testing._torprocess import (
    TorNetworkError,
    find_tor_binaries,
    run_program,
)

AUTHORITIES = 3
DEFAULT_RELAYS = 4
#: Bump when the layout of the cached key template changes.
TEMPLATE_FORMAT = 1

_log = Logger()


@frozen
class NodeKeys:
    """
    The identity of one authority or relay in a key template.

    :ivar nickname: its ``Nickname``.
    :ivar fingerprint: its relay identity fingerprint (40 hex digits).
    :ivar v3ident: for an authority, the fingerprint of its authority
        identity key; ``None`` for a relay.
    """

    nickname: str
    fingerprint: str
    v3ident: str | None = None


@frozen
class KeyTemplate:
    """
    A directory of pre-generated keys for every authority and relay, cached
    between test runs (one per tor version and network size).

    :ivar path: the directory; ``path/NICKNAME`` is a tor data directory
        holding only keys.
    :ivar nodes: authorities first, then relays.
    """

    path: str
    nodes: tuple[NodeKeys, ...]

    @property
    def authorities(self) -> tuple[NodeKeys, ...]:
        """
        The authorities' identities.
        """
        return tuple(n for n in self.nodes if n.v3ident is not None)

    @property
    def relays(self) -> tuple[NodeKeys, ...]:
        """
        The (non-authority) relays' identities.
        """
        return tuple(n for n in self.nodes if n.v3ident is None)

    def install(self, nickname: str, data_dir: str) -> None:
        """
        Copy the keys of ``nickname`` into a fresh tor data directory.
        """
        shutil.copytree(os.path.join(self.path, nickname), data_dir)
        os.chmod(data_dir, 0o700)


def default_template_cache() -> str:
    """
    Where key templates are cached: ``$XDG_CACHE_HOME/digitalspring`` (or
    ``~/.cache/digitalspring``) ``/tornet-template``.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "digitalspring", "tornet-template")


async def tor_version(reactor: Reactor, tor_binary: str) -> str:
    """
    The version of ``tor_binary``, such as ``0.4.9.11``.

    :raises TorNetworkError: if it does not say.
    """
    code, out = await run_program(reactor, [tor_binary, "--version"], None)
    match = re.search(rb"Tor version ([^\s]+?)\.?\s", out)
    if code != 0 or match is None:
        raise TorNetworkError(f"{tor_binary} --version failed ({code}): {out[-500:]!r}")
    return match.group(1).decode("ascii")


def _load_template(path: str, authorities: int, relays: int) -> KeyTemplate | None:
    """
    The template at ``path``, or ``None`` if it is missing, broken,
    incomplete or its authority certificates expire within a month.
    """
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
        if manifest["format"] != TEMPLATE_FORMAT:
            return None
        nodes = tuple(
            NodeKeys(n["nickname"], n["fingerprint"], n.get("v3ident")) for n in manifest["nodes"]
        )
        if (sum(n.v3ident is not None for n in nodes), sum(n.v3ident is None for n in nodes)) != (
            authorities,
            relays,
        ):
            return None
        for node in nodes:
            keys = os.path.join(path, node.nickname, "keys")
            needed = ["secret_id_key", "ed25519_master_id_secret_key"]
            if node.v3ident is not None:
                needed += ["authority_identity_key", "authority_signing_key",
                           "authority_certificate"]
                if _certificate_expiry(os.path.join(keys, "authority_certificate")) < (
                    time.time() + 30 * 86400
                ):
                    return None
            if not all(os.path.isfile(os.path.join(keys, name)) for name in needed):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return KeyTemplate(path, nodes)


def _certificate_expiry(path: str) -> float:
    with open(path) as f:
        match = re.search(r"^dir-key-expires (\S+ \S+)$", f.read(), re.MULTILINE)
    if match is None:
        raise ValueError(f"no dir-key-expires in {path}")
    return time.mktime(time.strptime(match.group(1) + " UTC", "%Y-%m-%d %H:%M:%S %Z"))


async def _generate_node_keys(
    reactor: Reactor,
    tor_binary: str,
    gencert_binary: str,
    data_dir: str,
    nickname: str,
    authority: bool,
    namespace: NetworkNamespace | None,
) -> NodeKeys:
    keys = os.path.join(data_dir, "keys")
    os.makedirs(keys, mode=0o700)
    os.chmod(data_dir, 0o700)
    v3ident = None
    if authority:
        # No -a: the certificate's dir-address would go stale when a later
        # run picks other ports; the DirAuthority lines carry the address.
        code, out = await run_program(reactor, [
            gencert_binary, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
            "-i", os.path.join(keys, "authority_identity_key"),
            "-s", os.path.join(keys, "authority_signing_key"),
            "-c", os.path.join(keys, "authority_certificate"),
        ], namespace, stdin=b"\n")
        if code != 0:
            raise TorNetworkError(
                f"tor-gencert failed ({code}): {out[-2000:].decode(errors='replace')}"
            )
        with open(os.path.join(keys, "authority_certificate")) as f:
            match = re.search(r"^fingerprint ([0-9A-F]{40})$", f.read(), re.MULTILINE)
        if match is None:
            raise TorNetworkError(f"no fingerprint in the certificate tor-gencert made in {keys}")
        v3ident = match.group(1)
    torrc = os.path.join(os.path.dirname(data_dir), f"{nickname}.keygen.torrc")
    with open(torrc, "w") as f:
        # Not TestingTorNetwork: it refuses to start without DirAuthority lines.
        f.write(
            f"DataDirectory {data_dir}\nNickname {nickname}\nORPort 127.0.0.1:1\n"
            "Address 127.0.0.1\nGeoIPFile \"\"\nGeoIPv6File \"\"\nLog warn stdout\n"
        )
    code, out = await run_program(
        reactor, [tor_binary, "--list-fingerprint", "-f", torrc], namespace
    )
    os.remove(torrc)
    try:
        with open(os.path.join(data_dir, "fingerprint")) as f:
            fingerprint = f.read().split()[1]
    except (OSError, IndexError) as e:
        raise TorNetworkError(
            f"tor --list-fingerprint failed ({code}, {e}): {out[-2000:].decode(errors='replace')}"
        ) from e
    for leftover in ("lock", "fingerprint-ed25519", "fingerprint"):
        if os.path.exists(os.path.join(data_dir, leftover)):
            os.remove(os.path.join(data_dir, leftover))
    return NodeKeys(nickname, fingerprint, v3ident)


async def load_or_create_template(
    reactor: Reactor,
    tor_binary: str,
    cache_dir: str | None = None,
    relays: int = DEFAULT_RELAYS,
    namespace: NetworkNamespace | None = None,
) -> KeyTemplate:
    """
    The cached key template for this tor version and network size, made
    (and cached) now if it is missing or broken.

    :param cache_dir: where templates live; :func:`default_template_cache`
        if ``None``.
    :raises TorNetworkError: if key generation fails.
    """
    tor_binary, gencert_binary = find_tor_binaries(tor_binary)
    version = await tor_version(reactor, tor_binary)
    cache_dir = cache_dir or default_template_cache()
    path = os.path.join(cache_dir, f"tor-{version}-a{AUTHORITIES}-r{relays}-f{TEMPLATE_FORMAT}")
    template = _load_template(path, AUTHORITIES, relays)
    if template is not None:
        _log.info("using cached Tor key template {path}", path=path)
        return template
    if os.path.exists(path):
        _log.warn("Tor key template {path} is broken or stale; regenerating it", path=path)
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(cache_dir, exist_ok=True)
    # Build it aside and rename it into place, so a concurrent or
    # interrupted run never sees half a template.
    building = tempfile.mkdtemp(prefix="building-", dir=cache_dir)
    try:
        names = [(f"auth{i}", True) for i in range(AUTHORITIES)]
        names += [(f"relay{i}", False) for i in range(relays)]
        results = await DeferredList(
            [
                Deferred.fromCoroutine(_generate_node_keys(
                    reactor, tor_binary, gencert_binary, os.path.join(building, nickname),
                    nickname, authority, namespace,
                ))
                for nickname, authority in names
            ],
            consumeErrors=True,
        )
        nodes = []
        for _, result in results:
            if isinstance(result, Failure):
                result.raiseException()
            nodes.append(result)
        with open(os.path.join(building, "manifest.json"), "w") as f:
            json.dump({
                "format": TEMPLATE_FORMAT,
                "tor_version": version,
                "nodes": [
                    {"nickname": n.nickname, "fingerprint": n.fingerprint, "v3ident": n.v3ident}
                    for n in nodes
                ],
            }, f, indent=1)
        try:
            os.rename(building, path)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            _log.info("another run cached a Tor key template first; using it")
    finally:
        shutil.rmtree(building, ignore_errors=True)
    template = _load_template(path, AUTHORITIES, relays)
    if template is None:
        raise TorNetworkError(f"the Tor key template just written to {path} does not load")
    _log.info("generated Tor key template {path}", path=path)
    return template

"""
A real node under attack: memory, and the latency a legitimate peer sees.

For a no-attack baseline and then each attack in turn, the script starts a
fresh node (``twistd -n dspring`` on 127.0.0.1, with the node's defaults) and
a legitimate peer in this process, which dials the node from its own address
(127.0.1.1) and pings it through the secure channel and AMP ``Ping`` 100
times a second throughout.  Each attack runs for ``--duration`` seconds at
full speed from ``--attackers`` processes, each dialling from its own
address (127.0.10.1, 127.0.11.1, ...: Linux routes all of 127.0.0.0/8 to
``lo``, and each has a /24 of its own), with these attacks (the findings of
issue 8 that attack resources; ``benchmarks/_attacks.py`` has the details):

* ``amp_box``: one never-ending AMP box per connection (unique keys,
  64 KiB values) over authenticated connections;
* ``unread_replies``: Ping and ``dht-find-value`` requests (for a record of
  almost 4 KB that the attacker stored first) sent without ever reading an
  answer;
* ``handshake_flood``: full IK and XX handshakes, as many as the attackers
  manage, and 256 idle authenticated connections held per attacker;
* ``sybil_origins``: ``dht-ping`` and ``dht-find-node`` from a fresh key
  each time, with a lying origin address (always in 127.0.0.0/8, or an onion
  address);
* ``record_flood``: stores of fresh self-signed records of almost 4 KB,
  each connection a new key;
* ``partial_frames``: garbage preambles, and connections held with a
  partial preamble, a partial handshake frame or an authenticated
  65535-byte frame that arrives one byte a second.

The attackers run at ``nice`` 19: on a real network they would not share
the node's core, and here the node (one thread) gets its core when it needs
it while the attackers still get every other cycle of the machine.  The
node's RSS (``VmRSS`` of ``/proc/PID/status``) is read just before the
attack, every 0.1 s during it, and ``--settle`` seconds after its
connections closed; an attack that takes the node past ``--rss-limit`` MiB
(2 GiB) is cut short, to spare the machine.  Each row also says how much
CPU the node used, how much it logged, what ``dspring status`` counts
afterwards, and what the attackers counted (connections, handshakes,
failures by kind).

Targets, for each attack: RSS growth (peak minus before) at most 64 MiB,
every legitimate ping answered, and their 99th percentile round trip at
most max(5 times the baseline's, 50 ms).

Run ``python benchmarks/hostile.py``; progress goes to stderr, a table of
the results to stdout, and the figures are one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _attacks import ATTACKS, Pinger, PingWindow, run_attack
from twisted.internet import stdio
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from digitalspring.identity import PeerID

#: Where the legitimate peer dials from.
LEGIT_ADDRESS = "127.0.1.1"
#: The targets of the issue.
RSS_TARGET_MB = 64.0
P99_FACTOR = 5.0
P99_FLOOR_MS = 50.0
STATUS = ("status", "--json")
TWISTD = "from twisted.scripts.twistd import run; run()"
_READY = re.compile(r"node ([a-z2-7]{56}) ready at \['tcp:([0-9.]+):(\d+)'")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def attacker_address(index: int) -> str:
    """
    The source address of attacker ``index``: a /24 of its own.
    """
    return f"127.0.{10 + index}.1"


# -- the node's process ---------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """
    The resident set of process ``pid`` in MiB, or ``None`` once it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """
    The user and system CPU time process ``pid`` has used, in seconds.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class NodeProcess:
    """
    A ``twistd -n dspring`` process on 127.0.0.1 with the node's defaults,
    its log in a file (a pipe nobody drains would stall it).
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.data_dir = os.path.join(directory, "data")
        self.log_path = os.path.join(directory, "node.log")
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                TWISTD,
                "-n",
                "--pidfile",
                os.path.join(directory, "twistd.pid"),
                "dspring",
                "--data-dir",
                self.data_dir,
                "--no-passphrase",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
        self.pid = self.proc.pid
        self.peer_id: PeerID | None = None
        self.host = ""
        self.port = 0

    async def ready(self, reactor: Any, timeout: float = 60.0) -> None:
        """
        Wait until the node logs that it is ready.

        :raises RuntimeError: with the log, when it does not.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                found = _READY.search(f.read())
            if found:
                self.peer_id = PeerID.parse(found.group(1))
                self.host, self.port = found.group(2), int(found.group(3))
                return
            await deferLater(reactor, 0.1)
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            raise RuntimeError("the node did not start:\n" + f.read())

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)

    def status(self) -> dict[str, Any]:
        """
        What ``dspring status --json`` says of the node's DHT and
        connections, or why it said nothing.
        """
        try:
            done = subprocess.run(
                [sys.executable, "-m", "digitalspring", "--data-dir", self.data_dir, *STATUS],
                capture_output=True,
                text=True,
                timeout=60,
            )
            status = json.loads(done.stdout)
        except (subprocess.TimeoutExpired, ValueError) as e:
            return {"error": str(e)}
        dht = status.get("dht") or {}
        summary = {
            "connections": len(status.get("connections", [])),
            "dht_routing_table": dht.get("routing_table"),
            "dht_records": dht.get("records"),
        }
        # Whatever counters of refused connections the node keeps.
        summary.update({key: value for key, value in status.items() if "refused" in key})
        return summary

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the attackers' processes ------------------------------------------------------------


class Attacker(ProcessProtocol):
    """
    One attacker process: says ``ready`` once loaded, attacks on ``go``,
    and prints its counts as the last line before it exits.
    """

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        if b"\n" in self._out and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self._err = (self._err + data)[-4000:]

    def go(self) -> None:
        assert self.transport is not None
        self.transport.write(b"go\n")

    def stop(self) -> None:
        """
        Ask the attacker to end its attack now.
        """
        if not self.ended.called:
            assert self.transport is not None
            self.transport.write(b"stop\n")

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError("an attacker died:\n" + self._err.decode()))
        if not isinstance(reason.value, ProcessDone):
            progress("an attacker failed:\n" + self._err.decode(errors="replace"))
        self.ended.callback(None)

    def counts(self) -> dict[str, int]:
        """
        The attacker's report: its last line of output.
        """
        lines = self._out.decode(errors="replace").strip().splitlines()
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            return {}
        return report if isinstance(report, dict) else {}

    def kill(self) -> None:
        assert self.transport is not None
        try:
            self.transport.signalProcess("KILL")
        except Exception:  # it ended meanwhile
            pass


def spawn_attacker(
    reactor: Any, options: argparse.Namespace, attack: str, index: int, node: NodeProcess
) -> Attacker:
    attacker = Attacker()
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--attack",
        attack,
        "--source",
        attacker_address(index),
        "--target",
        f"{node.host}:{node.port}",
        "--node",
        str(node.peer_id),
        "--duration",
        str(options.duration),
        "--nice",
        str(options.nice),
    ]
    reactor.spawnProcess(attacker, sys.executable, argv, env=os.environ.copy())
    return attacker


class _StopOnLine(LineOnlyReceiver):
    """
    Fires ``stop`` on the first line, or when the driver goes away.
    """

    delimiter = b"\n"

    def __init__(self, stop: Deferred[None]) -> None:
        self._stop = stop

    def lineReceived(self, line: bytes) -> None:
        if not self._stop.called:
            self._stop.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lineReceived(b"")


def attack_main(options: argparse.Namespace) -> None:
    """
    One attacker process: load, say ``ready``, wait for ``go``, attack,
    print the counts.
    """
    os.nice(options.nice)
    host, port = options.target.rsplit(":", 1)
    node = PeerID.parse(options.node)
    print("ready", flush=True)
    sys.stdin.readline()

    async def attack(reactor: Any) -> None:
        stop: Deferred[None] = Deferred()
        stdio.StandardIO(  # type: ignore[no-untyped-call,call-arg]
            _StopOnLine(stop), stdout=os.open(os.devnull, os.O_WRONLY)
        )
        counts = await run_attack(
            reactor, options.attack, options.source, host, int(port), node, options.duration, stop
        )
        print(json.dumps(counts), flush=True)

    react(lambda reactor: Deferred.fromCoroutine(attack(reactor)))


# -- one phase: a fresh node, the legitimate peer, an attack or none -----------------------------


def p99(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def ping_figures(window: PingWindow) -> dict[str, Any]:
    rtts_ms = [rtt * 1000 for rtt in window.rtts]
    return {
        "legit_pings_sent": window.sent,
        "legit_ping_success": round(len(rtts_ms) / window.sent, 5) if window.sent else 0.0,
        "legit_ping_p99_ms": round(p99(rtts_ms), 2),
        "legit_ping_median_ms": round(statistics.median(rtts_ms), 2) if rtts_ms else math.nan,
        "legit_ping_max_ms": round(max(rtts_ms), 2) if rtts_ms else math.nan,
        "legit_ping_failures": dict(window.failures),
    }


async def phase(
    reactor: Any, options: argparse.Namespace, name: str, workdir: str
) -> dict[str, Any]:
    """
    Start a fresh node, ping it throughout, and run attack ``name`` (or
    none, for ``baseline``) against it.

    :returns: the phase's figures.
    """
    node = NodeProcess(os.path.join(workdir, name))
    attackers: list[Attacker] = []
    pinger: Pinger | None = None
    try:
        await node.ready(reactor)
        assert node.peer_id is not None
        pinger = Pinger(reactor, LEGIT_ADDRESS, node.host, node.port, node.peer_id)
        await pinger.connect()
        pinger.start()
        if name != "baseline":
            attackers = [
                spawn_attacker(reactor, options, name, index, node)
                for index in range(options.attackers)
            ]
            await gatherResults([attacker.ready for attacker in attackers])
        await deferLater(reactor, options.warmup)
        pinger.take()
        before = rss_mb(node.pid) or math.nan
        cpu_before, log_before = cpu_seconds(node.pid), node.log_size()
        samples = [before]

        stopped_at: list[float] = []

        def sample() -> None:
            rss = rss_mb(node.pid) or math.nan
            samples.append(rss)
            if rss > options.rss_limit and attackers and not stopped_at:
                # Far past the target already: spare the machine.
                stopped_at.append(round(time.monotonic() - began, 1))
                progress(f"{name}: node RSS {rss:.0f} MiB > {options.rss_limit} MiB, stopping")
                for attacker in attackers:
                    attacker.stop()

        sampler = LoopingCall(sample)
        sampler.clock = reactor
        began = time.monotonic()
        sampler.start(0.1)
        progress(f"{name}: attacking for {options.duration} s" if attackers else f"{name}: ...")
        for attacker in attackers:
            attacker.go()
        if attackers:

            def kill_all() -> None:
                for attacker in attackers:
                    attacker.kill()

            overdue = reactor.callLater(options.duration + 60, kill_all)
            await gatherResults([attacker.ended for attacker in attackers])
            if overdue.active():
                overdue.cancel()
        else:
            await deferLater(reactor, options.duration)
        elapsed = time.monotonic() - began
        window = pinger.take()
        sampler.stop()
        cpu = cpu_seconds(node.pid) - cpu_before
        await window.close()
        await deferLater(reactor, options.settle)
        after = rss_mb(node.pid)
        alive = node.proc.poll() is None
        peak = max((s for s in samples if not math.isnan(s)), default=math.nan)
        figures: dict[str, Any] = {
            "rss_growth_mb": round(peak - before, 1),
            **ping_figures(window),
            "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(peak, 1),
            "rss_after_mb": None if after is None else round(after, 1),
            "node_alive": alive,
            "node_cpu_percent": round(100 * cpu / elapsed, 1),
            "node_log_kb": round((node.log_size() - log_before) / 1024, 1),
            "legit_reconnects": pinger.reconnects,
            "stopped_at_rss_limit_s": stopped_at[0] if stopped_at else None,
            "node_status": node.status() if alive else {},
        }
        if attackers:
            totals: dict[str, int] = {}
            for attacker in attackers:
                for key, value in attacker.counts().items():
                    if key.startswith("most_"):
                        totals[key] = max(totals.get(key, 0), value)
                    else:
                        totals[key] = totals.get(key, 0) + value
            figures["attackers"] = dict(sorted(totals.items()))
        return figures
    finally:
        for attacker in attackers:
            if not attacker.ended.called:
                attacker.kill()
        if pinger is not None:
            await pinger.stop()
        node.stop()


# -- targets and the report ---------------------------------------------------------------


def check(figures: dict[str, Any], baseline_p99: float) -> list[str]:
    """
    The targets an attack's figures miss, by name; none when all are met.
    """
    missed = []
    if not figures["rss_growth_mb"] <= RSS_TARGET_MB:
        missed.append(f"rss +{figures['rss_growth_mb']} MiB > {RSS_TARGET_MB:.0f}")
    if figures["legit_ping_success"] != 1.0:
        missed.append(f"success {100 * figures['legit_ping_success']:.2f} %")
    limit = max(P99_FACTOR * baseline_p99, P99_FLOOR_MS)
    if not figures["legit_ping_p99_ms"] <= limit:
        missed.append(f"p99 {figures['legit_ping_p99_ms']} ms > {limit:.1f}")
    return missed


def table(baseline: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'attack':<16} {'RSS before/peak/after MiB':>26} {'growth':>7} "
        f"{'pings ok':>9} {'p99 ms':>8} {'cpu %':>6}  target"
    )
    lines = [header, "-" * len(header)]
    for name, figures in {"baseline": baseline, **results}.items():
        after = figures["rss_after_mb"]
        rss = f"{figures['rss_before_mb']}/{figures['rss_peak_mb']}/{after}"
        verdict = (
            "-"
            if name == "baseline"
            else ("met" if not figures["missed"] else "MISSED: " + "; ".join(figures["missed"]))
        )
        lines.append(
            f"{name:<16} {rss:>26} {figures['rss_growth_mb']:>7} "
            f"{100 * figures['legit_ping_success']:>8.2f}% {figures['legit_ping_p99_ms']:>8} "
            f"{figures['node_cpu_percent']:>6}  {verdict}"
        )
    return "\n".join(lines)


async def run(reactor: Any, options: argparse.Namespace) -> None:
    attacks = options.only or list(ATTACKS)
    with tempfile.TemporaryDirectory(prefix="dspring-hostile-") as temporary:
        workdir = options.workdir or temporary
        progress(f"baseline: {options.duration} s without attack")
        baseline = await phase(reactor, options, "baseline", workdir)
        baseline_p99 = baseline["legit_ping_p99_ms"]
        progress(f"baseline: p99 {baseline_p99} ms, RSS {baseline['rss_before_mb']} MiB")
        results: dict[str, dict[str, Any]] = {}
        for attack in attacks:
            figures = await phase(reactor, options, attack, workdir)
            figures["baseline_ping_p99_ms"] = baseline_p99
            figures["missed"] = check(figures, baseline_p99)
            figures["targets_met"] = not figures["missed"]
            results[attack] = figures
            progress(
                f"{attack}: RSS +{figures['rss_growth_mb']} MiB, pings "
                f"{100 * figures['legit_ping_success']:.2f} % ok, p99 "
                f"{figures['legit_ping_p99_ms']} ms"
            )
    baseline["missed"] = []
    print(table(baseline, results))
    report: dict[str, Any] = {
        **results,
        "baseline_ping_p99_ms": baseline_p99,
        "baseline": baseline,
        "duration_s": options.duration,
        "attackers": options.attackers,
        "rss_limit_mb": options.rss_limit,
        "all_targets_met": all(figures["targets_met"] for figures in results.values()),
    }
    print(json.dumps(report), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each attack")
    parser.add_argument("--attackers", type=int, default=8, help="attacker processes")
    parser.add_argument(
        "--only", action="append", choices=ATTACKS, help="run this attack (repeatable)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of pings first")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds before the RSS after an attack"
    )
    parser.add_argument("--nice", type=int, default=19, help="niceness of the attackers")
    parser.add_argument(
        "--rss-limit",
        type=float,
        default=2048.0,
        help="MiB of node RSS at which an attack is cut short, to spare the machine",
    )
    parser.add_argument(
        "--workdir", help="keep the nodes' data and logs here (default: a temporary directory)"
    )
    parser.add_argument("--attack", choices=ATTACKS, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.attack:
        attack_main(options)
        return
    if not 1 <= options.attackers <= 200:
        parser.error("--attackers is from 1 to 200")

    def start(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(run(reactor, options))

    react(start)


if __name__ == "__main__":
    main(sys.argv[1:])

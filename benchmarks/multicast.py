"""
Multicast strategies side by side: ``spring`` and ``unicast`` send one
message from an owner to ``n`` members, through the real node code on the
memory network, against the physical lower bound (issue 11).

What is real and what is simulated
----------------------------------

Every node is the real code: its own identity, connection pool (production
idle timeout, 300 s), Noise channels, AMP, a memory store and the multicast
service running the strategy under test, which is looked up by name among
the installed strategy plugins (a strategy that is not installed is said so
on stderr and has no rows).  The network is the memory transport and time
a simulated clock (``benchmarks/_multicast_sim.py``): CPU time never delays
a node, and every figure but ``wall_s`` and ``peak_rss_mb`` is simulated.

Profiles (``--profile``):

* ``broadband`` (the default): each host 1.25 MB/s up and 6.25 MB/s down,
  one-way latency uniform in 20-150 ms per pair of hosts, 0.5 % loss (a
  lost chunk arrives one retransmission timeout later);
* ``tor``: 0.5 MB/s each way, 250-600 ms, no loss, and 2-5 s to set up
  each connection.

A strategy with an upload budget (``spring``) runs with the profile's
upload rate as its budget.

Rows: n in {10, 100, 1,000} x {1 KiB, 1 MiB}, plus n = 10,000 x 1 KiB
(``--n``, ``--size``, ``--strategy`` and ``--profile`` select; 10,000 x
1 MiB only when ``--size`` is given).  Each row runs in a child process of
its own, so its ``peak_rss_mb`` is its own.

How a row runs: the owner creates the group with the strategy and invites
every member (all in one commit: ``add_members`` in
``_multicast_sim.py``); once all have joined, the clock runs past the idle
timeout so that no connection is left from the set-up; then the owner
publishes ``size`` random bytes as a file and the run goes on until every
member committed it, then until the owner's delivery report settled (every
member acknowledged), then ``TEARDOWN_GRACE`` (60 s) more.

Fields per row:

* ``delivered_ratio``: members that committed the message intact, of ``n``;
* ``completion_s``: from ``publish`` to the last member's commit (``null``
  unless every member committed it);
* ``lower_bound_s``: ``(size - F)/U + ceil(log2(n + 1)) F/U + L``, with
  F = min(size, 65,000), U the upload rate and L the smallest one-way
  latency of the profile; ``completion_vs_bound`` is their ratio;
* ``sender_upload_x``, ``max_member_upload_x``: the bytes the owner's
  (the busiest member's) uplink carried, divided by ``size``;
* ``dup_fragments_per_member``: fragments handed to a member's group
  context that it already held, per member;
* ``wire_x``: all bytes every uplink carried, divided by ``size x n``;
* ``connections_after``: connections still open ``TEARDOWN_GRACE`` after
  the report settled;
* ``wall_s``: wall-clock seconds of the transmission (publish to the end of
  the measurement); ``peak_rss_mb``: the row's process, set-up included.

Bytes are counted by the memory transport as they leave each host's uplink
(``MemoryHost.bytes_sent``): preambles, Noise handshakes and framing, AMP
boxes, everything the strategies and the service send, without TCP/IP
headers; from the ``publish`` call to the end of the measurement.

Run ``python benchmarks/multicast.py [--strategy spring,unicast]
[--profile broadband,tor] [--n 10,100] [--size 1KiB,1MiB]``; progress goes
to stderr, ending with a table of the rows per profile (as
``docs/benchmarks-multicast.rst`` shows them), and the last line of output
is one JSON object: ``rows``, ``details`` (per row: set-up time, events,
warnings) and ``targets`` (issue 11's, each ``met`` or not, or ``not
run``).  ``--plot`` also draws ``docs/multicast-completion.svg`` from the
rows; ``--from-json FILE`` prints the tables and draws the plot from an
earlier run's last line instead of running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * 1024

#: The issue's rows: (n, size).
GRID = [(n, size) for n in (10, 100, 1000) for size in (KIB, MIB)] + [(10_000, KIB)]

PLOT = HERE.parent / "docs" / "multicast-completion.svg"


def progress(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def parse_size(text: str) -> int:
    """
    ``"1KiB"``, ``"256KiB"``, ``"1MiB"`` or a number of bytes.
    """
    text = text.strip()
    for suffix, scale in (("KiB", KIB), ("MiB", MIB)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * scale)
    return int(text)


def size_name(size: int) -> str:
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def select_rows(ns: list[int] | None, sizes: list[int] | None) -> list[tuple[int, int]]:
    """
    The rows to run: the issue's, or those of the chosen ``n`` and sizes.
    Without chosen sizes, n = 10,000 gets 1 KiB only, as in the issue.
    """
    if ns is None and sizes is None:
        return list(GRID)
    chosen_ns = ns if ns is not None else sorted({n for n, _ in GRID})
    if sizes is not None:
        return [(n, size) for n in chosen_ns for size in sizes]
    return [(n, size) for n in chosen_ns for size in (KIB, MIB) if n < 10_000 or size == KIB]


def installed(names: Iterable[str]) -> list[str]:
    """
    The strategies of ``names`` that are installed; each missing one is
    said on stderr.
    """
    from digitalspring.multicast import strategy_plugins

    plugins = strategy_plugins()
    found = []
    for name in names:
        if name in plugins:
            found.append(name)
        else:
            progress(
                f"strategy {name!r} is not installed (installed: "
                f"{', '.join(sorted(plugins)) or 'none'}): no rows for it"
            )
    return found


def run_child(strategy: str, profile: str, n: int, size: int, seed: int) -> dict[str, Any]:
    """
    One row in a process of its own.
    """
    spec = json.dumps(
        {"strategy": strategy, "profile": profile, "n": n, "size": size, "seed": seed}
    )
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--row", spec],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def row_child(spec: dict[str, Any]) -> None:
    """
    In a child process: run one row and print it as one JSON line.
    """
    from _multicast_sim import PROFILES, run_row

    from digitalspring.multicast import get_strategy

    row, details = run_row(
        get_strategy(spec["strategy"]),
        PROFILES[spec["profile"]],
        spec["n"],
        spec["size"],
        spec["seed"],
    )
    print(json.dumps({"row": row, "details": details}), flush=True)


# --- targets -------------------------------------------------------------------


def _find(rows: list[dict[str, Any]], strategy: str, n: int, size: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["strategy"], row["profile"], row["n"], row["size"]) == (
            strategy,
            "broadband",
            n,
            size,
        ):
            return row
    return None


def _check(name: str, value: Any, limit: float, compare: str) -> dict[str, Any]:
    if value is None:
        met = False
    elif compare == "<=":
        met = value <= limit
    else:
        met = value == limit
    return {"target": name, "value": value, "limit": limit, "met": met}


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Issue 11's targets for ``spring`` on the broadband profile, each checked
    against the rows that ran (a target whose rows did not run is ``not
    run``).
    """
    targets: list[dict[str, Any]] = []
    bound_limit = {10: 1.8, 100: 2.3, 1000: 2.7}
    for n, size in GRID:
        row = _find(rows, "spring", n, size)
        where = f"n={n} {size_name(size)}"
        if row is None:
            targets.append({"target": f"spring {where}", "met": "not run"})
            continue

        def add(
            name: str, value: Any, limit: float, compare: str = "<=", where: str = where
        ) -> None:
            targets.append(_check(f"spring {where}: {name}", value, limit, compare))

        add("delivered_ratio == 1.0", row["delivered_ratio"], 1.0, "==")
        add("connections_after == 0", row["connections_after"], 0, "==")
        if size == MIB:
            add("sender_upload_x <= 1.2", row["sender_upload_x"], 1.2)
            add(
                f"completion_vs_bound <= {bound_limit[n]}",
                row["completion_vs_bound"],
                bound_limit[n],
            )
            limit = 2.0 if n <= 100 else 2.5
            add(f"max_member_upload_x <= {limit}", row["max_member_upload_x"], limit)
            add("dup_fragments_per_member <= 0.1", row["dup_fragments_per_member"], 0.1)
            add("wire_x <= 1.3", row["wire_x"], 1.3)
        else:
            add("wire_x <= 4", row["wire_x"], 4)
            unicast = _find(rows, "unicast", n, size)
            if unicast is None:
                targets.append(
                    {"target": f"spring {where}: completion vs unicast", "met": "not run"}
                )
                continue
            ratio = (
                None
                if row["completion_s"] is None or not unicast["completion_s"]
                else round(row["completion_s"] / unicast["completion_s"], 3)
            )
            add("completion_s <= 1.0 x unicast's", ratio, 1.0)
            if n == 1000:
                upload = round(row["sender_upload_x"] / unicast["sender_upload_x"], 4)
                add("sender_upload_x <= 0.1 x unicast's", upload, 0.1)
    return targets


def _say_targets(targets: list[dict[str, Any]]) -> None:
    for target in targets:
        met = target["met"]
        label = "not run" if met == "not run" else "met" if met else "MISSED"
        value = f" ({target['value']})" if "value" in target else ""
        progress(f"{label}: {target['target']}{value}")


# --- plot ----------------------------------------------------------------------


def _times(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.1f}"


#: The table's columns: heading, the row's field, how a value is written
#: (``None`` is written ``-``).
TABLE_COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("strategy", "strategy", str),
    ("n", "n", lambda n: f"{n:,}"),
    ("size", "size", size_name),
    ("done", "delivered_ratio", lambda ratio: f"{ratio:.1f}"),
    ("completion_s", "completion_s", lambda s: f"{s:.3f}"),
    ("bound_s", "lower_bound_s", lambda s: f"{s:.4f}"),
    ("vs_bound", "completion_vs_bound", _times),
    ("sender_x", "sender_upload_x", _times),
    ("max_member_x", "max_member_upload_x", _times),
    ("wire_x", "wire_x", _times),
    ("conns_after", "connections_after", lambda n: f"{n:,}"),
    ("wall_s", "wall_s", lambda s: f"{s:.2f}"),
    ("rss_mb", "peak_rss_mb", lambda mb: f"{round(mb):,}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    """
    The rows of one profile as ``docs/benchmarks-multicast.rst`` shows
    them: the first four columns to the left, the figures to the right.
    """
    cells = [[heading for heading, _, _ in TABLE_COLUMNS]]
    for row in rows:
        cells.append(
            [
                "-" if row.get(field) is None else write(row[field])
                for _, field, write in TABLE_COLUMNS
            ]
        )
    widths = [max(len(line[column]) for line in cells) for column in range(len(TABLE_COLUMNS))]
    lines = []
    for line in cells:
        lines.append(
            "  ".join(
                cell.ljust(width) if column < 4 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines) + "\n"


def print_tables(rows: list[dict[str, Any]]) -> None:
    """
    A table per profile, on stderr (stdout's last line is the JSON).
    """
    for profile in sorted({row["profile"] for row in rows}):
        progress(f"\n{profile}:\n" + table([r for r in rows if r["profile"] == profile]))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """
    Draw completion time against n, for each strategy and the lower bound,
    one panel per message size (broadband rows).
    """
    from _multicast_plot import Series, svg_panels

    panels = []
    for size in sorted({row["size"] for row in rows if row["profile"] == "broadband"}):
        chosen = [r for r in rows if r["profile"] == "broadband" and r["size"] == size]
        series = []
        for strategy in sorted({r["strategy"] for r in chosen}):
            points = [
                (r["n"], r["completion_s"])
                for r in chosen
                if r["strategy"] == strategy and r["completion_s"] is not None
            ]
            series.append(Series(strategy, sorted(points)))
        bounds = sorted({(r["n"], r["lower_bound_s"]) for r in chosen})
        series.append(Series("lower bound", bounds, dashed=True))
        panels.append((f"{size_name(size)}, broadband", series))
    path.write_text(svg_panels(panels))
    progress(f"plot written to {path}")


# --- against gossipsub ---------------------------------------------------------

#: The anchor's benchmark, beside the repository in ``../shared``.
GOSSIP_BENCH = HERE.parent.parent / "shared" / "anchors" / "gossipsub" / "gossip_bench.py"

#: The issue's rows for the comparison: (hosts, size).
GOSSIP_GRID = [(n, size) for n in (10, 30, 60) for size in (KIB, 256 * KIB)]


def tcp_row_child(spec: dict[str, Any]) -> None:
    """
    In a child process: one strategy over TCP, one JSON line.
    """
    from _multicast_tcp import tcp_child

    from digitalspring.multicast import get_strategy

    tcp_child(get_strategy(spec["strategy"]), spec["n"], spec["size"], spec["messages"])


def _last_json(out: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def gossipsub_row(python: str, bench: Path, n: int, size: int, messages: int) -> dict[str, Any]:
    """
    The anchor's gossipsub benchmark, with its own interpreter, stop-and-wait.
    """
    out = subprocess.run(
        [
            python,
            str(bench),
            *("--n", str(n), "--size", str(size), "--m", str(messages)),
            *("--stop-and-wait", "--interval", "0.05"),
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return _last_json(out)


def _ratio(ours: Any, theirs: Any) -> float | None:
    if ours is None or not theirs:
        return None
    return round(float(ours) / float(theirs), 3)


def _summary(figures: dict[str, Any]) -> dict[str, Any]:
    """
    The anchor's figures that both sides report, under the issue's names.
    """
    return {
        "delivery_ratio": figures.get("delivery_ratio"),
        "t_last_median_ms": figures.get("t_last_median_ms"),
        "t_last_p95_ms": figures.get("t_last_p95_ms"),
        "wire_x": figures.get("all_hosts_wire_per_delivered_payload"),
        "dup_per_member_per_msg": figures.get("dup_per_sub_per_msg_mean"),
        "sender_upload_x": figures.get("pub_wire_amplification"),
        "cpu_s": figures.get("cpu_publish_phase_s"),
    }


def vs_gossipsub(
    python: str,
    bench: Path,
    strategies: list[str],
    rows: list[tuple[int, int]],
    messages: int,
) -> dict[str, Any]:
    """
    Each row with each strategy over TCP and with gossipsub, side by side,
    and the issue's two targets for ``spring``.
    """
    results = []
    targets: list[dict[str, Any]] = []
    for n, size in rows:
        progress(f"gossipsub, n={n}, {size_name(size)}")
        theirs = _summary(gossipsub_row(python, bench, n, size, messages))
        row: dict[str, Any] = {"n": n, "size": size, "gossipsub": theirs}
        progress(f"  {theirs}")
        for strategy in strategies:
            progress(f"{strategy} over TCP, n={n}, {size_name(size)}")
            spec = json.dumps({"strategy": strategy, "n": n, "size": size, "messages": messages})
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--tcp-row", spec],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            ours = _summary(_last_json(out))
            ours["ratios"] = {
                name: _ratio(ours[name], theirs[name])
                for name in ("t_last_median_ms", "t_last_p95_ms", "wire_x")
            }
            row[strategy] = ours
            progress(f"  {ours}")
            if strategy == "spring":
                where = f"spring vs gossipsub n={n} {size_name(size)}"
                ratios = ours["ratios"]
                targets.append(
                    _check(f"{where}: wire_x <= 0.3 x gossipsub's", ratios["wire_x"], 0.3, "<=")
                )
                targets.append(
                    _check(
                        f"{where}: median last-member latency <= 1.0 x gossipsub's",
                        ratios["t_last_median_ms"],
                        1.0,
                        "<=",
                    )
                )
        results.append(row)
    return {"vs_gossipsub": results, "targets": targets}


# --- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="spring,unicast", help="comma-separated names")
    parser.add_argument("--profile", default="broadband,tor", help="broadband, tor, or both")
    parser.add_argument("--n", help="comma-separated member counts (default: the issue's rows)")
    parser.add_argument("--size", help="comma-separated sizes: 1KiB, 1MiB, or bytes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", action="store_true", help=f"draw {PLOT.name} in docs/")
    parser.add_argument("--from-json", metavar="FILE", help="plot an earlier run's rows")
    parser.add_argument(
        "--vs-gossipsub",
        metavar="PYTHON",
        help="run the strategies over TCP beside the gossipsub anchor, run with PYTHON",
    )
    parser.add_argument("--gossip-bench", default=str(GOSSIP_BENCH), help=argparse.SUPPRESS)
    parser.add_argument("--messages", type=int, default=20, help="messages per --vs-gossipsub row")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--tcp-row", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.row:
        row_child(json.loads(options.row))
        sys.exit(0)
    if options.tcp_row:
        tcp_row_child(json.loads(options.tcp_row))
        sys.exit(0)
    if options.from_json:
        lines = Path(options.from_json).read_text().strip().splitlines()
        earlier: dict[str, Any] = json.loads(lines[-1])
        print_tables(earlier["rows"])
        plot(earlier["rows"], PLOT)
        return earlier

    from _multicast_sim import PROFILES

    profiles = _list(options.profile)
    for name in profiles:
        if name not in PROFILES:
            parser.error(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    ns = [int(n) for n in _list(options.n)] if options.n else None
    sizes = [parse_size(s) for s in _list(options.size)] if options.size else None
    strategies = installed(_list(options.strategy))
    if options.vs_gossipsub:
        chosen = [
            (n, size)
            for n in (ns or sorted({n for n, _ in GOSSIP_GRID}))
            for size in (sizes or sorted({size for _, size in GOSSIP_GRID}))
        ]
        compared = vs_gossipsub(
            options.vs_gossipsub, Path(options.gossip_bench), strategies, chosen, options.messages
        )
        _say_targets(compared["targets"])
        print(json.dumps(compared))
        return compared
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    for profile in profiles:
        for n, size in select_rows(ns, sizes):
            for strategy in strategies:
                progress(
                    f"[{time.perf_counter() - began:7.1f} s] {strategy}, {profile}, "
                    f"n={n}, {size_name(size)}"
                )
                result = run_child(strategy, profile, n, size, options.seed)
                row = result["row"]
                rows.append(row)
                details.append(
                    {
                        "strategy": strategy,
                        "profile": profile,
                        "n": n,
                        "size": size,
                        **result["details"],
                    }
                )
                progress(
                    f"  delivered {row['delivered_ratio']}, completion {row['completion_s']} s "
                    f"(bound {row['lower_bound_s']} s), sender upload {row['sender_upload_x']}x, "
                    f"wire {row['wire_x']}x, {row['connections_after']} connections after, "
                    f"{row['wall_s']} s wall, {row['peak_rss_mb']} MB"
                )
    targets = check_targets(rows)
    _say_targets(targets)
    print_tables(rows)
    figures: dict[str, Any] = {"rows": rows, "details": details, "targets": targets}
    if options.plot:
        plot(rows, PLOT)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()

"""WAN mode of the fleet benchmark: every target behind a delay forwarder, round trips per job.

What it owns: the WAN lab (every target a server of its own: its own sshd with its own host key
and its own nginx; the delay forwarders in front of each target's sshd and TLS port), the jobs (certctl deploy, deploy --dry-run, verify;
the floors `ssh host true` and a hand-written one-session deploy + one openssl probe), the
round-trip arithmetic and the wire analysis of the forwarders' traces, and the WAN tables.
What it does not: the forwarder itself (bench/delayfwd.py, a separate process so that the
bench's own threads never delay a delivery), the PKI, sshd and nginx themselves, the inventory
and certctl's process accounting, which are fleetbench.py's and shared with the loopback matrix.

Each job runs over three paths in the same run: `direct` (no forwarder), `0ms` (through a
forwarder that adds nothing: its overhead) and `<RTT>ms`. Round trips = wall ÷ RTT; net round
trips = (wall at RTT − wall through the 0 ms forwarder) ÷ RTT, i.e. without local CPU time.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import fleetbench as fb  # the running script registers itself under this name

DELAYFWD = Path(__file__).resolve().parent / "delayfwd.py"
JOBS = ("deploy", "dry-run", "verify", "ssh-true", "hand-written")
STEP_ORDER = ("connect", "lock", "recover", "inspect", "stage", "preview", "backup", "swap", "test", "reload", "verify",
              "rollback", "cleanup", "session", "probe", "(no step)", "(no target)")
# certctl's time outside its steps: "(no step)" = a target's duration minus its steps' (mean over
# targets), "(no target)" = the report's duration minus the longest target's (fleet-wide work
# before and after the targets); the process's start and exit are the rest of the wall time.


def path_name(rtt_ms: float | None) -> str:
    return "direct" if rtt_ms is None else f"{rtt_ms:g}ms"


class Forwarder:
    """One delayfwd.py process: every target's ssh port and TLS port at one RTT."""

    def __init__(self, lab: fb.Lab, rtt_ms: float, routes: list[str], listens: list[tuple[str, int]]):
        self.rtt_ms = rtt_ms
        self.trace = lab.dir / "wan" / f"fwd-{rtt_ms:g}ms.trace"
        argv = [sys.executable, DELAYFWD, "--rtt", f"{rtt_ms:g}ms", "--realtime", "--trace", self.trace, *routes]
        self.daemon = fb.Daemon(f"delayfwd {rtt_ms:g}ms", argv, lab.dir / "wan" / f"fwd-{rtt_ms:g}ms.log")
        lab.daemons.append(self.daemon)
        fb.wait_listening(listens, self.daemon)

    def cpu(self) -> float:
        st = fb.proc_stat(self.daemon.pid)
        return st[1] if st else 0.0


class WanTarget:
    """A bench target with its own sshd (own host key) and the address its forwarders listen on."""

    def __init__(self, t: fb.Target, sshd: fb.Sshd, fwd_addr: str):
        self.t, self.sshd, self.fwd_addr = t, sshd, fwd_addr


class Wan:
    def __init__(self, bench: fb.Bench, rtts_ms: list[float], sizes: list[int], forks: int):
        self.bench, self.lab, self.a = bench, bench.lab, bench.a
        self.rtts_ms, self.sizes, self.forks = rtts_ms, sizes, forks
        self.paths: list[float | None] = [None, 0.0, *[r for r in rtts_ms if r != 0]]
        self.fwds: dict[float, Forwarder] = {}
        self.ports: dict[float, tuple[int, int]] = {}  # rtt -> (ssh port, tls port) on every forwarded address
        self.inv_cache: dict[tuple, Path] = {}

    # ---- the lab -------------------------------------------------------------------------------

    def setup(self) -> None:
        lab, count = self.lab, max(self.sizes)
        (lab.dir / "wan").mkdir()
        addrs = [f"127.90.{i // 200}.{1 + i % 200}" for i in range(count)]
        fwd_addrs = [f"127.91.{i // 200}.{1 + i % 200}" for i in range(count)]
        # One sshd per target with its own host key, as a real fleet has: certctl caps
        # handshakes per host key, so the loopback matrix's one shared key would queue N = 50
        # behind 8 handshake slots, which no fleet of distinct servers does.
        sshd_port = fb.free_port(addrs)
        # Every target is a server of its own: its own nginx (no shared mirror), so N = 50 does
        # what N = 1 does, 50 times, and every probe attributes what it sees to its target.
        targets = lab.make_targets(lab.dir / "wan" / "targets", count, addrs, 1, prefix="w")
        self.targets = []
        for t, fa in zip(targets, fwd_addrs):
            key = lab.dir / "sshd" / f"wan-{t.name}_ed25519"
            fb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key])
            sftp = "internal-sftp"
            if self.a.sftp_log:  # internal-sftp can only log to syslog; the external one to a file
                sftp = f"/usr/lib/openssh/sftp-server -e -l DEBUG3 2>>{lab.dir / 'wan' / ('sftp-' + t.name + '.log')}"
            sshd = fb.Sshd(lab, f"wan-{t.name}", [t.addr], sshd_port, self.a.max_startups, self.a.max_sessions,
                           clean_shell=not self.a.login_rc, host_key=key, sftp_subsystem=sftp)
            self.targets.append(WanTarget(t, sshd, fa))
        self.sshd_port = sshd_port
        self.sshds = [w.sshd for w in self.targets]
        used: set[int] = {sshd_port}
        for rtt in self.paths[1:]:
            ports = []
            while len(ports) < 2:
                p = fb.free_port(fwd_addrs)
                if p not in used:
                    used.add(p)
                    ports.append(p)
            self.ports[rtt] = (ports[0], ports[1])
            routes, listens = [], []
            with open(lab.known_hosts, "a") as kh:
                for w in self.targets:
                    routes.append(f"{w.fwd_addr}:{ports[0]}={w.t.addr}:{sshd_port}")
                    routes.append(f"{w.fwd_addr}:{ports[1]}={self.bench.verify_addr(w.t)}")
                    listens += [(w.fwd_addr, ports[0]), (w.fwd_addr, ports[1])]
                    kh.write(f"[{w.fwd_addr}]:{ports[0]} {w.sshd.host_key_pub}\n")
            self.fwds[rtt] = Forwarder(lab, rtt, routes, listens)
        fb.log(f"wan: {count} targets, each with its own sshd (own host key) and nginx; "
               f"forwarders at {', '.join(f'{r:g} ms' for r in self.paths[1:])}")

    def ssh_endpoint(self, w: WanTarget, rtt) -> tuple[str, int]:
        return (w.t.addr, self.sshd_port) if rtt is None else (w.fwd_addr, self.ports[rtt][0])

    def tls_endpoint(self, w: WanTarget, rtt) -> str:
        return self.bench.verify_addr(w.t) if rtt is None else f"{w.fwd_addr}:{self.ports[rtt][1]}"

    def inventory(self, ws: list[WanTarget], cert: str, rtt) -> Path:
        key = (len(ws), cert, rtt)
        if key not in self.inv_cache:
            by_name = {w.t.name: w for w in ws}
            port = self.sshd_port if rtt is None else self.ports[rtt][0]
            self.inv_cache[key] = self.lab.inventory(
                [w.t for w in ws], cert, port,
                addr_of=lambda t: self.ssh_endpoint(by_name[t.name], rtt)[0],
                verify_of=lambda t: self.tls_endpoint(by_name[t.name], rtt))
        return self.inv_cache[key]

    # ---- the hand-written floor ----------------------------------------------------------------

    def handwritten_script(self, w: WanTarget, cert: str) -> str:
        """What an operator would type: one shell, the files inline, check, back up, mv, test,
        reload. No lock, no inspect, no preview, no rollback."""
        t, m = w.t, self.lab.pki[cert]
        q = shlex.quote
        lines = ["set -e", "umask 077", f"cd {q(str(t.dir))}"]
        staged = {}
        for role in t.roles:
            live = t.path(role).name
            staged[role] = f".hw-{live}.new"
            lines += [f"cat > {staged[role]} <<'CERTCTL_BENCH_EOF'", Path(m[role]).read_text().rstrip("\n"), "CERTCTL_BENCH_EOF"]
            if role != "key":
                lines.append(f"chmod 644 {staged[role]}")
        cert_role = "fullchain" if "fullchain" in t.roles else "cert"
        lines.append(f'[ "$(openssl x509 -noout -pubkey -in {staged[cert_role]})" = "$(openssl pkey -pubout -in {staged["key"]})" ]')
        lines.append("mkdir -p hw-backup")
        lines.append("cp -p " + " ".join(t.path(r).name for r in t.roles) + " hw-backup/")
        lines += [f"mv -f {staged[r]} {t.path(r).name}" for r in t.roles]
        if t.nginx:
            lines.append(shlex.join(t.nginx.argv("-t", "-q")))
            lines.append(shlex.join(t.nginx.argv("-s", "reload")))
        return "\n".join(lines) + "\n"

    # ---- jobs ------------------------------------------------------------------------------------

    def floor(self, ws: list[WanTarget], items: list[list[tuple[str, list]]]) -> dict:
        """Each item runs its named argvs in order (stopping at a failure); `forks` items at once."""
        def one(item):
            steps, rc, err = {}, 0, []
            for name, argv in item:
                t0 = time.perf_counter()
                try:
                    r = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
                    rc, err = r.returncode, r.stderr.decode(errors="replace").strip().splitlines()[-1:]
                except subprocess.TimeoutExpired:
                    rc, err = -1, ["timeout"]
                steps[name] = (time.perf_counter() - t0) * 1000
                if rc != 0:
                    break
            return steps, rc, err

        load = os.getloadavg()[0]
        with fb.Probe(self.sshds) as pr:
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.forks) as pool:
                results = list(pool.map(one, items))
            wall = time.perf_counter() - t0
        errors: dict[str, int] = {}
        steps: dict[str, list] = {}
        for s, rc, err in results:
            for k, v in s.items():
                steps.setdefault(k, []).append(v)
            if rc != 0:
                key = re.sub(r"127\.9[01]\.\d+\.\d+|port \d+", "…", (err or ["?"])[0])[:200]
                errors[key] = errors.get(key, 0) + 1
        failed = sum(1 for _, rc, _ in results if rc != 0)
        return {"wall_s": wall, "ok": failed == 0, "failed": failed, "total": len(items), "errors": errors, "loadavg_1m": load,
                "sshd_cpu_s": pr.sshd_cpu, "sshd_log": fb.log_stats(pr.log),
                "step_mean_ms": {k: sum(v) / len(v) for k, v in steps.items()}, "step_max_ms": {k: max(v) for k, v in steps.items()}}

    def sftp_log_sizes(self) -> dict:
        out = {}
        for w in self.targets:
            try:
                out[w.t.name] = (self.lab.dir / "wan" / f"sftp-{w.t.name}.log").stat().st_size
            except OSError:
                out[w.t.name] = 0
        return out

    def sftp_requests(self, before: dict) -> dict:
        """sftp-server's DEBUG3 `request N: WHAT` lines since `before`, by WHAT (all targets)."""
        counts: dict[str, int] = {}
        for w in self.targets:
            try:
                with open(self.lab.dir / "wan" / f"sftp-{w.t.name}.log", "rb") as f:
                    f.seek(before.get(w.t.name, 0))
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            for m in re.finditer(r"request \d+: (\w+)", text):
                if m[1] != "sent":  # the answers
                    counts[m[1]] = counts.get(m[1], 0) + 1
        return counts

    def job(self, ws: list[WanTarget], rtt, kind: str, new: str) -> dict:
        """One run of one job over one path. `new`: the certificate this round deploys."""
        b, lab, forks = self.bench, self.lab, self.forks
        fwd = self.fwds.get(rtt)
        cpu0 = fwd.cpu() if fwd else None
        sftp0 = self.sftp_log_sizes() if self.a.sftp_log else None
        t0 = time.monotonic()
        what = f"wan-{kind}-{len(ws)}-{path_name(rtt)}"
        if kind == "deploy":
            r = b.certctl_run(self.sshds, ["deploy", "--forks", forks], self.inventory(ws, new, rtt), "deployed", what)
            for w in ws:
                if w.t.name in b.last_deployed:
                    w.t.state = new
        elif kind == "dry-run":
            lab.ensure_state([w.t for w in ws], new)
            r = b.certctl_run(self.sshds, ["deploy", "--dry-run", "--forks", forks], self.inventory(ws, fb.other(new), rtt), "would-change", what)
        elif kind == "verify":
            r = b.certctl_run(self.sshds, ["verify", "--forks", forks], self.inventory(ws, new, rtt), "ok", what)
        elif kind == "ssh-true":
            r = self.floor(ws, [[("session", fb.ssh_argv(lab, *self.ssh_endpoint(w, rtt), b.kex))] for w in ws])
        else:  # hand-written: deploys the other certificate, as the next round's deploy expects
            cert = fb.other(new)
            items = []
            for w in ws:
                argv = fb.ssh_argv(lab, *self.ssh_endpoint(w, rtt), b.kex)[:-1] + [self.handwritten_script(w, cert)]
                items.append([("session", argv), ("probe", fb.probe_argv(self.tls_endpoint(w, rtt)))])
            r = self.floor(ws, items)
            for w in ws:
                w.t.state = cert
        r["window"] = (t0, time.monotonic())
        if kind == "hand-written":  # its reload has returned; old workers may still answer
            for w in ws:
                if w.t.nginx:
                    w.t.nginx.wait_serving(lab.pki[w.t.state]["fp"])
        if sftp0 is not None:
            time.sleep(0.05)  # sftp-server's last lines
            r["sftp_requests"] = self.sftp_requests(sftp0)
        if fwd:
            r["forwarder_cpu_s"] = fwd.cpu() - cpu0
        if "summary" in r:  # certctl: per-step means from its JSON report, and what no step holds
            sm = r["summary"]
            r["step_mean_ms"] = dict(sm.get("step_mean_ms", {}))
            r["step_max_ms"] = dict(sm.get("step_max_ms", {}))
            if sm.get("outside_steps_mean_ms") is not None:
                r["step_mean_ms"]["(no step)"] = sm["outside_steps_mean_ms"]
                r["step_max_ms"]["(no step)"] = sm["outside_steps_max_ms"]
            if sm.get("report_duration_ms") is not None and sm.get("target_duration_max_ms") is not None:
                r["step_mean_ms"]["(no target)"] = r["step_max_ms"]["(no target)"] = sm["report_duration_ms"] - sm["target_duration_max_ms"]
        return r

    def run(self) -> dict:
        lab, b = self.lab, self.bench
        self.setup()
        # warm-up, not recorded: the first certctl and ssh processes of a run pay for cold caches
        self.job(self.targets, None, "dry-run", self.targets[0].t.state)
        self.job(self.targets, None, "ssh-true", self.targets[0].t.state)
        runs: dict[tuple, list] = {}
        for rep in range(self.a.runs):
            for n in self.sizes:
                ws = self.targets[:n]
                for rtt in self.paths:
                    fb.log(f"  wan N={n} forks={self.forks} {path_name(rtt)} run {rep + 1}/{self.a.runs}")
                    new = fb.other(ws[0].t.state)
                    lab.ensure_state([w.t for w in ws], fb.other(new))
                    lab.set_mirror(new)
                    for kind in JOBS:
                        r = self.job(ws, rtt, kind, new)
                        runs.setdefault((n, rtt, kind), []).append(r)
                        if kind in ("deploy", "dry-run", "verify") and not r["ok"]:
                            b.failures.append(f"wan N={n} {path_name(rtt)} {kind}: rc={r['rc']} statuses={r['summary'].get('statuses')} "
                                              f"errors={r['summary'].get('errors')} stderr={r.get('stderr_tail', '')[-400:]!r}")
        for fwd in self.fwds.values():
            fwd.daemon.stop()  # flushes its trace
        traces = {rtt: parse_trace(fwd.trace) for rtt, fwd in self.fwds.items()}
        for (n, rtt, kind), rs in runs.items():
            if rtt is not None:
                for i, r in enumerate(rs):
                    r["wire"] = wire_stats(traces[rtt], r["window"], n, self.ports[rtt][0], timeline=(i == 0 and n == 1))
        return summarise(runs, self.paths, self.rtts_ms, self.sizes, self.forks, self.a.runs)


# ---- results -------------------------------------------------------------------------------------


def summarise(runs: dict, paths: list, rtts_ms: list, sizes: list, forks: int, nruns: int) -> dict:
    """runs: (n, rtt or None, job) -> the runs of that job -> the WAN part of the results."""
    rows = []
    for n in sizes:
        for kind in JOBS:
            wall = {rtt: fb.median([r["wall_s"] for r in runs[(n, rtt, kind)]]) for rtt in paths}
            for rtt in paths[2:]:
                rs = runs[(n, rtt, kind)]
                steps = {}
                for step in STEP_ORDER:
                    means = [r["step_mean_ms"][step] for r in rs if step in r.get("step_mean_ms", {})]
                    maxes = [r["step_max_ms"][step] for r in rs if step in r.get("step_max_ms", {})]
                    if means:
                        steps[step] = {"rt_mean": fb.median(means) / rtt, "rt_max": fb.median(maxes) / rtt,
                                       "ms_mean": fb.median(means)}
                rows.append({
                    "n": n, "forks": forks, "job": kind, "rtt_ms": rtt,
                    "ok": all(r["ok"] for r in rs),
                    "wall_s": {path_name(p): wall[p] for p in paths},
                    "round_trips": wall[rtt] * 1000 / rtt,
                    # paired by run (a run's three paths follow each other), then the median
                    "round_trips_net": paired(runs[(n, rtt, kind)], runs[(n, 0.0, kind)]) * 1000 / rtt,
                    "forwarder_overhead_s": paired(runs[(n, 0.0, kind)], runs[(n, None, kind)]),
                    "sshd_cpu_s": fb.median([r["sshd_cpu_s"] for r in rs]),
                    "forwarder_cpu_s": {path_name(p): fb.median([r.get("forwarder_cpu_s") for r in runs[(n, p, kind)]]) for p in paths[1:]},
                    "steps": steps,
                    "sshd_log": rs[0].get("sshd_log"),
                    "sftp_requests_per_target": {k: v / n for k, v in (rs[0].get("sftp_requests") or {}).items()},
                    "wire": median_wire([r.get("wire") for r in rs]),
                    "timeline": rs[0].get("wire", {}).get("timeline"),
                    "runs": {path_name(p): [strip(r) for r in runs[(n, p, kind)]] for p in paths},
                })
    return {"rtts_ms": rtts_ms, "sizes": sizes, "forks": forks, "runs": nruns,
            "targets": {"sshd": "one per target, own ed25519 host key", "nginx": "one per target",
                        "forwarder": "bench/delayfwd.py: one process per RTT, each direction delayed RTT/2, TCP handshake 1 RTT"},
            "rows": rows}


def paired(a: list[dict], b: list[dict]) -> float | None:
    """The median of run-by-run wall differences a[i] − b[i]."""
    return fb.median([x["wall_s"] - y["wall_s"] for x, y in zip(a, b)])


def strip(r: dict) -> dict:
    """A run as stored: no timeline (kept once per row), no window (monotonic clock)."""
    out = {k: v for k, v in r.items() if k not in ("window",)}
    if "wire" in out:
        out["wire"] = {k: v for k, v in out["wire"].items() if k != "timeline"}
    return out


# ---- the forwarders' traces -----------------------------------------------------------------------


def parse_trace(path: Path) -> dict:
    """conn id -> {open, listen, reads: [(t, dir, bytes)], late: [ms]}."""
    conns: dict[int, dict] = {}
    try:
        f = open(path)
    except OSError:
        return conns
    with f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "O":
                conns[int(p[2])] = {"open": float(p[1]), "listen": p[3], "reads": [], "late": []}
            elif p[0] == "R" and int(p[2]) in conns:
                conns[int(p[2])]["reads"].append((float(p[1]), p[3], int(p[4])))
            elif p[0] == "W" and int(p[2]) in conns:
                conns[int(p[2])]["late"].append(float(p[5]))
    return conns


FLIGHT_GAP = 0.005  # seconds of silence that end a flight


def flights(reads: list) -> list[list]:
    """Reads from one side merged while the other side is silent and no gap exceeds FLIGHT_GAP:
    [start, dir, bytes]. Roughly, each client flight is one more thing the client waited for
    (or a message it sent on its own, e.g. a channel close after a probe)."""
    out: list[list] = []
    last = None
    for t, d, nbytes in reads:
        if nbytes == 0:
            continue
        if out and out[-1][1] == d and t - last <= FLIGHT_GAP:
            out[-1][2] += nbytes
        else:
            out.append([t, d, nbytes])
        last = t
    return out


def wire_stats(conns: dict, window: tuple, n: int, ssh_port: int, timeline: bool) -> dict:
    """What the forwarder saw during one job: connections, client flights and bytes per target
    (ssh and TLS separately), and how late its deliveries were."""
    t0, t1 = window
    mine = [c for c in conns.values() if t0 <= c["open"] <= t1]
    out: dict = {}
    late = sorted(x for c in mine for x in c["late"])
    ssh, tls = [], []
    for c in mine:
        (ssh if c["listen"].endswith(f":{ssh_port}") else tls).append((c, flights(c["reads"])))
    for name, group in (("ssh", ssh), ("tls", tls)):
        out[name] = {
            "connections_per_target": len(group) / n,
            "client_flights_per_target": sum(sum(1 for f in fl if f[1] == "c") for _, fl in group) / n,
            "bytes_up_per_target": sum(f[2] for _, fl in group for f in fl if f[1] == "c") / n,
            "bytes_down_per_target": sum(f[2] for _, fl in group for f in fl if f[1] == "s") / n,
        }
    out["late_ms"] = {"p50": pct(late, 50), "p99": pct(late, 99), "max": late[-1] if late else None, "writes": len(late)}
    if timeline:
        out["timeline"] = [{"conn": kind, "flights": [[round((f[0] - t0) * 1000, 1), f[1], f[2]] for f in fl]}
                           for kind, group in (("ssh", ssh), ("tls", tls)) for _, fl in group]
    return out


def pct(xs: list, p: float):
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def median_wire(ws: list) -> dict | None:
    ws = [w for w in ws if w]
    if not ws:
        return None
    out = {}
    for name in ("ssh", "tls"):
        out[name] = {k: fb.median([w[name][k] for w in ws]) for k in ws[0][name]}
    out["late_ms"] = {k: fb.median([w["late_ms"][k] for w in ws]) for k in ("p50", "p99", "max")}
    return out


# ---- printing ---------------------------------------------------------------------------------------

JOB_LABEL = {"deploy": "certctl deploy", "dry-run": "certctl dry-run", "verify": "certctl verify", "ssh-true": "ssh host true",
             "hand-written": "hand-written+probe"}


def print_tables(wan: dict) -> None:
    f = fb.fmt
    for rtt in [r for r in wan["rtts_ms"] if r != 0]:
        rows = [r for r in wan["rows"] if r["rtt_ms"] == rtt]
        p = path_name(rtt)
        print(f"\nWAN: RTT {rtt:g} ms (each direction {rtt / 2:g} ms, TCP handshake 1 RTT), --forks {wan['forks']}, "
              f"median of {wan['runs']} run(s)")
        head = (f"{'N':>3} {'job':<18} {'direct s':>8} {'fwd 0 s':>8} {'ovh ms':>6} {p + ' s':>8} {'RT':>5} {'RT net':>6} "
                f"{'sshd cpu':>8} {'fwd cpu':>7} {'conn/exec/sftp':>14} {'flights':>7} {'tls':>3}  ok")
        print(head)
        print("-" * len(head))
        for r in rows:
            w = r["wall_s"]
            lg = r.get("sshd_log") or {}
            n = r["n"]
            per = f"{lg['connections'] / n:.1f}/{lg['exec_sessions'] / n:.1f}/{lg['sftp_sessions'] / n:.1f}" if lg.get("connections") else "—"
            wire = r.get("wire") or {}
            print(f"{n:>3} {JOB_LABEL[r['job']]:<18} {f(w['direct'], 3):>8} {f(w['0ms'], 3):>8} "
                  f"{f(r['forwarder_overhead_s'] * 1000, 0):>6} {f(w[p], 3):>8} {f(r['round_trips'], 1):>5} {f(r['round_trips_net'], 1):>6} "
                  f"{f(r['sshd_cpu_s']):>8} {f(r['forwarder_cpu_s'][p]):>7} {per:>14} "
                  f"{f(wire.get('ssh', {}).get('client_flights_per_target'), 1):>7} "
                  f"{f(wire.get('tls', {}).get('connections_per_target'), 0):>3}  {'yes' if r['ok'] else 'NO'}")
        print("RT = wall ÷ RTT; RT net and ovh: medians of run-by-run differences, RT net = (wall − wall through the 0 ms")
        print("forwarder) ÷ RTT, ovh = 0 ms forwarder − direct; sshd cpu = the targets' sshd and everything under them, fwd cpu =")
        print("the forwarder's, at this RTT; flights = client→server flights per target on its ssh connection, tls = TLS connections")
        print("per target (forwarder trace); conn/exec/sftp per target from sshd's log.")
        sizes = wan["sizes"]
        cols = [(job, n) for job in ("deploy", "dry-run", "verify", "hand-written") for n in sizes]
        print(f"\nper step, round trips (duration ÷ RTT; N > 1: mean over targets / max), RTT {rtt:g} ms:")
        print(f"{'step':<9}" + "".join(f"{job[:7] + ' N=' + str(n):>17}" for job, n in cols))
        by = {(r["job"], r["n"]): r for r in rows}
        for step in STEP_ORDER:
            cells = []
            for job, n in cols:
                s = by.get((job, n), {}).get("steps", {}).get(step)
                cells.append("—" if not s else (f"{s['rt_mean']:.1f}" if n == 1 else f"{s['rt_mean']:.1f} / {s['rt_max']:.1f}"))
            if any(c != "—" for c in cells):
                print(f"{step:<9}" + "".join(f"{c:>17}" for c in cells))
        for r in rows:
            late = (r.get("wire") or {}).get("late_ms") or {}
            if r["job"] == "deploy":
                ops = r.get("sftp_requests_per_target") or {}
                print(f"N={r['n']} deploy: sftp requests per target {ops or '— (--sftp-log)'}; forwarder lateness p50 {f(late.get('p50'), 2)} ms, "
                      f"p99 {f(late.get('p99'), 2)} ms, max {f(late.get('max'), 2)} ms")


def from_results(wan: dict) -> dict:
    """The WAN part of a results file, summarised again by this code (after a change to it)."""
    runs: dict[tuple, list] = {}
    for row in wan["rows"]:
        for name, rs in row["runs"].items():
            rtt = None if name == "direct" else float(name[:-2])
            runs[(row["n"], rtt, row["job"])] = rs
            if rtt == row["rtt_ms"] and rs and rs[0].get("wire") is not None and row.get("timeline"):
                rs[0]["wire"]["timeline"] = row["timeline"]
    paths = [None, 0.0, *[r for r in wan["rtts_ms"] if r != 0]]
    return summarise(runs, paths, wan["rtts_ms"], wan["sizes"], wan["forks"], wan["runs"])


if __name__ == "__main__":
    # python3 bench/wan.py RESULTS.json: the WAN tables of a results file, printed again
    import json

    print_tables(from_results(json.loads(Path(sys.argv[1]).read_text())["wan"]))

#!/usr/bin/env python3
"""certctl fleet benchmark: real sshd and nginx on loopback, certctl against a floor.

Everything runs on this machine, as root: one or more OpenSSH sshd listening on several
127.88.x.y addresses, one directory per target, a real nginx for every tenth target (it serves
that target's files) and a "mirror" nginx that every other target's probe points at (the bench
switches it to the certificate being deployed before each run). certctl's `deploy`,
`deploy --dry-run`, `verify` and `check` are timed against the floor measured in the same run:
bare OpenSSH connections running `true`, and bare `openssl s_client` handshakes.

Standard library only. See bench/README.md. Every process started here is stopped by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/wan.py imports this file as `fleetbench`; run as a script it is `__main__`, and without
# this alias that import would load a second copy of every class and global.
sys.modules.setdefault("fleetbench", sys.modules[__name__])

ROOT = Path(__file__).resolve().parent.parent
SNI = "bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# OpenSSH's compile-time limit on listen sockets per sshd (MAX_LISTEN_SOCKS in sshd.c).
SSHD_MAX_LISTEN = 16
VERIFY = {"attempts": 6, "backoff": "250ms", "max_backoff": "2s", "timeout": "10s"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("capture_output", True)
    return subprocess.run([str(a) for a in argv], **kw)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------------------------
# processes


def proc_stat(pid: int):
    """(ppid, utime+stime, cutime+cstime) in seconds, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, (int(rest[13]) + int(rest[14])) / CLK_TCK


def all_ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st:
                out[int(entry)] = st[0]
    return out


def descendants(pid: int) -> list[int]:
    ppids = all_ppids()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, pp in ppids.items():
            if pp == parent and child not in found:
                found.append(child)
                frontier.append(child)
    return found


class Daemon:
    """A daemon started in the foreground as our child; stopped by PID (and its descendants)."""

    def __init__(self, name: str, argv: list, log_path: Path):
        self.name = name
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(log_path.with_suffix(".stderr"), "wb"),
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return  # already reaped: its PID may belong to someone else now
        kids = descendants(self.pid)
        for pid in [self.pid] + kids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in kids:
            if proc_stat(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def wait_listening(addrs, daemon: Daemon, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(addrs)
    while pending:
        if not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited ({daemon.proc.returncode}) before listening:\n{read_tail(daemon.log_path)}")
        host, port = pending[0]
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{daemon.name} not listening on {host}:{port}:\n{read_tail(daemon.log_path)}")
            time.sleep(0.02)


def read_tail(path: Path, n=4000) -> str:
    texts = []
    for p in (path, path.with_suffix(".stderr")):
        try:
            texts.append(p.read_text(errors="replace")[-n:])
        except OSError:
            pass
    return "\n".join(texts)


def free_port(addrs) -> int:
    """A port free on every address in `addrs`."""
    for _ in range(200):
        s = socket.socket()
        s.bind((addrs[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for a in addrs[1:]:
            t = socket.socket()
            try:
                t.bind((a, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no port free on every address")


# --------------------------------------------------------------------------------------------
# material


def fingerprint_pem(pem_path: Path) -> str:
    pem = pem_path.read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


def served_fingerprint(addr: str, port: int, timeout=3.0):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            with ctx.wrap_socket(s, server_hostname=SNI) as t:
                return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()
    except OSError:
        return None


def make_pki(d: Path) -> dict:
    """Root -> intermediate -> leaves A and B (EC P-256, SAN bench.test), via openssl."""
    d.mkdir(parents=True)

    def ec(name):
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d / name])

    ec("root.key")
    run(["openssl", "req", "-x509", "-new", "-key", d / "root.key", "-out", d / "root.crt", "-days", "365", "-subj", "/CN=certctl-bench-root"])
    ec("int.key")
    run(["openssl", "req", "-new", "-key", d / "int.key", "-out", d / "int.csr", "-subj", "/CN=certctl-bench-intermediate"])
    (d / "int.ext").write_text("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n")
    run(["openssl", "x509", "-req", "-in", d / "int.csr", "-CA", d / "root.crt", "-CAkey", d / "root.key", "-CAcreateserial",
         "-out", d / "int.crt", "-days", "365", "-extfile", d / "int.ext"])
    (d / "leaf.ext").write_text(f"subjectAltName=DNS:{SNI}\nbasicConstraints=CA:false\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    out = {}
    for leaf in ("A", "B"):
        ec(f"{leaf}.key")
        run(["openssl", "req", "-new", "-key", d / f"{leaf}.key", "-out", d / f"{leaf}.csr", "-subj", f"/CN={SNI}"])
    # A and B must have the same validity to the second: certctl's policy gate refuses a leaf
    # issued before, or expiring before, the one served now, and the runs alternate A and B.
    for _ in range(10):
        for leaf in ("A", "B"):
            run(["openssl", "x509", "-req", "-in", d / f"{leaf}.csr", "-CA", d / "int.crt", "-CAkey", d / "int.key", "-CAcreateserial",
                 "-out", d / f"{leaf}.crt", "-days", "90", "-extfile", d / "leaf.ext"])
        dates = {run(["openssl", "x509", "-noout", "-dates", "-in", d / f"{leaf}.crt"], text=True).stdout for leaf in ("A", "B")}
        if len(dates) == 1:
            break
    else:
        raise RuntimeError("leaves A and B were signed in different seconds ten times")
    for leaf in ("A", "B"):
        (d / f"{leaf}.fullchain").write_text((d / f"{leaf}.crt").read_text() + (d / "int.crt").read_text())
        os.chmod(d / f"{leaf}.key", 0o600)
        out[leaf] = {
            "cert": d / f"{leaf}.crt",
            "chain": d / "int.crt",
            "key": d / f"{leaf}.key",
            "fullchain": d / f"{leaf}.fullchain",
            "fp": fingerprint_pem(d / f"{leaf}.crt"),
        }
    return out


def other(cert: str) -> str:
    return "B" if cert == "A" else "A"


def write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name("." + path.name + ".bench")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the lab


class Sshd:
    def __init__(self, lab: "Lab", name: str, addrs: list[str], port: int, max_startups, max_sessions, clean_shell=True, log_level="VERBOSE",
                 host_key: Path | None = None, sftp_subsystem: str = "internal-sftp"):
        """`host_key`: this sshd's own key (default: the lab's, shared by every sshd);
        `sftp_subsystem`: the `Subsystem sftp` command."""
        self.name, self.addrs, self.port = name, addrs, port
        self.host_key = host_key or lab.host_key
        self.host_key_pub = " ".join(Path(str(self.host_key) + ".pub").read_text().split()[:2])
        d = lab.dir / "sshd"
        self.log_path = d / f"{name}.log"
        conf = [f"ListenAddress {a}:{port}" for a in addrs]
        conf += [
            f"HostKey {self.host_key}",
            f"PidFile {d / (name + '.pid')}",
            f"AuthorizedKeysFile {lab.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"LogLevel {log_level}",
        ]
        if clean_shell:
            # bash sources ~/.bashrc for a command run by sshd unless SHLVL says it is nested:
            # keeps the login user's rc files (here: root's `pyenv init`) out of every channel.
            conf.append("SetEnv SHLVL=1")
        if max_startups:
            conf.append(f"MaxStartups {max_startups}")
        if max_sessions:
            conf.append(f"MaxSessions {max_sessions}")
        conf.append(f"Subsystem sftp {sftp_subsystem}")
        self.config = d / f"{name}.conf"
        self.config.write_text("\n".join(conf) + "\n")
        self.daemon = Daemon(f"sshd {name}", ["/usr/sbin/sshd", "-D", "-f", self.config, "-E", self.log_path], self.log_path)
        lab.daemons.append(self.daemon)
        wait_listening([(a, port) for a in addrs], self.daemon)
        with open(lab.known_hosts, "a") as f:
            for a in addrs:
                f.write(f"[{a}]:{port} {self.host_key_pub}\n")

    def cpu(self) -> float:
        st = proc_stat(self.daemon.pid)
        return st[1] + st[2] if st else 0.0

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")


class Nginx:
    def __init__(self, lab: "Lab", name: str, addr: str, port: int, fullchain: Path, key: Path, chain: Path | None, big: bool):
        self.name, self.addr, self.port = name, addr, port
        self.dir = lab.dir / "nginx" / name
        for sub in ("logs", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.fullchain, self.key, self.chain = fullchain, key, chain
        self.conf = self.dir / "nginx.conf"
        self.error_log = self.dir / "logs/error.log"
        t = self.dir / "tmp"
        trusted = f"    ssl_trusted_certificate {chain};\n" if chain else ""
        self.conf.write_text(
            f"worker_processes {2 if big else 1};\n"
            f"worker_rlimit_nofile {16384 if big else 1024};\n"
            f"pid {self.dir / 'nginx.pid'};\n"
            f"error_log {self.error_log};\n"
            f"events {{ worker_connections {4096 if big else 512}; }}\n"
            # As Debian's /etc/nginx/nginx.conf ships it: nginx 1.22's built-in default has no
            # TLS 1.3, whose handshake is one round trip shorter (it matters in the WAN mode).
            "http {\n  access_log off;\n  ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fastcgi;\n"
            f"  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n"
            f"  server {{\n    listen {addr}:{port} ssl;\n    server_name {SNI};\n"
            f"    ssl_certificate {fullchain};\n    ssl_certificate_key {key};\n{trusted}"
            '    location / { return 200 "ok\\n"; }\n  }\n}\n'
        )
        self.base_args = ["-p", f"{self.dir}/", "-c", self.conf, "-e", self.error_log]
        self.daemon = Daemon(f"nginx {name}", ["/usr/sbin/nginx", "-g", "daemon off;"] + self.base_args, self.error_log)
        lab.daemons.append(self.daemon)
        wait_listening([(addr, port)], self.daemon)

    def argv(self, *args) -> list[str]:
        return ["/usr/sbin/nginx", *args, *[str(a) for a in self.base_args]]

    def reload_and_wait(self, fp: str, timeout=20.0) -> None:
        run(self.argv("-s", "reload"))
        self.wait_serving(fp, timeout)

    def wait_serving(self, fp: str, timeout=20.0, in_a_row=5) -> None:
        """Until nginx serves `fp` to `in_a_row` probes in a row, 20 ms apart: old workers
        answer for a few ms after a reload, and the next job's first probe must not meet one."""
        deadline = time.monotonic() + timeout
        seen = 0
        while seen < in_a_row:
            seen = seen + 1 if served_fingerprint(self.addr, self.port) == fp else 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx {self.name} does not serve {fp[:16]} after reload:\n{read_tail(self.error_log)}")
            if seen < in_a_row:
                time.sleep(0.02)


class Target:
    def __init__(self, lab: "Lab", root: Path, index: int, nginx_backed: bool, prefix: str = "t"):
        self.name = f"{prefix}{index:04d}"  # also the name of its nginx's directory: unique per lab
        self.index = index
        self.dir = root / self.name
        self.dir.mkdir(parents=True)
        self.nginx_backed = nginx_backed
        self.nginx: Nginx | None = None
        # nginx-backed: the certbot layout nginx loads (fullchain + chain + key);
        # the others: cert + chain + key. Three files either way.
        self.roles = ("fullchain", "chain", "key") if nginx_backed else ("cert", "chain", "key")
        self.state = None

    def path(self, role: str) -> Path:
        return self.dir / {"cert": "cert.pem", "fullchain": "fullchain.pem", "chain": "chain.pem", "key": "key.pem"}[role]

    def write_local(self, material: dict) -> None:
        for role in self.roles:
            write_file(self.path(role), Path(material[role]).read_bytes(), 0o600 if role == "key" else 0o644)


class Lab:
    def __init__(self, keep: bool):
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="certctl-bench-"))
        self.daemons: list[Daemon] = []
        (self.dir / "sshd").mkdir()
        (self.dir / "inv").mkdir()
        (self.dir / "out").mkdir()
        Path("/run/sshd").mkdir(exist_ok=True)
        self.pki = make_pki(self.dir / "pki")
        self.host_key = self.dir / "sshd/host_ed25519"
        self.client_key = self.dir / "sshd/client_ed25519"
        for k in (self.host_key, self.client_key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", k])
        self.host_key_pub = " ".join((self.dir / "sshd/host_ed25519.pub").read_text().split()[:2])
        self.authorized_keys = self.dir / "sshd/authorized_keys"
        shutil.copy(str(self.client_key) + ".pub", self.authorized_keys)
        self.known_hosts = self.dir / "sshd/known_hosts"
        self.known_hosts.write_text("")
        self.sshds: list[Sshd] = []
        self.targets: list[Target] = []
        self.mirror: Nginx | None = None
        self.mirror_state = "A"
        self.inv_count = 0

    def close(self) -> None:
        for d in reversed(self.daemons):
            try:
                d.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {d.name} (pid {d.pid}): {e}")
        if self.keep:
            log(f"lab directory kept: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def sshd_group(self, name: str, addrs: list[str], max_startups, max_sessions, clean_shell=True, log_level="VERBOSE") -> list[Sshd]:
        """sshds covering `addrs`, at most SSHD_MAX_LISTEN addresses each, one port for all."""
        port = free_port(addrs)
        group = []
        for i in range(0, len(addrs), SSHD_MAX_LISTEN):
            s = Sshd(self, f"{name}-{i // SSHD_MAX_LISTEN}", addrs[i : i + SSHD_MAX_LISTEN], port, max_startups, max_sessions, clean_shell, log_level)
            group.append(s)
            self.sshds.append(s)
        return group

    def start_mirror(self) -> None:
        addr = "127.88.250.1"
        d = self.dir / "mirror"
        d.mkdir()
        m = self.pki["A"]
        shutil.copy(m["fullchain"], d / "fullchain.pem")
        shutil.copy(m["key"], d / "key.pem")
        self.mirror_files = (d / "fullchain.pem", d / "key.pem")
        self.mirror = Nginx(self, "mirror", addr, free_port([addr]), d / "fullchain.pem", d / "key.pem", None, big=True)

    def set_mirror(self, cert: str) -> None:
        if self.mirror_state == cert:
            return
        m = self.pki[cert]
        write_file(self.mirror_files[0], m["fullchain"].read_bytes(), 0o644)
        write_file(self.mirror_files[1], m["key"].read_bytes(), 0o600)
        self.mirror.reload_and_wait(m["fp"])
        self.mirror_state = cert

    def make_targets(self, root: Path, count: int, addrs: list[str], nginx_every: int, prefix: str = "t") -> list[Target]:
        a = self.pki["A"]
        targets = []
        for i in range(count):
            t = Target(self, root, i, nginx_every > 0 and i % nginx_every == 0, prefix)
            t.write_local(a)
            t.state = "A"
            t.addr = addrs[i % len(addrs)]
            if t.nginx_backed:
                port = free_port([t.addr])
                t.nginx = Nginx(self, t.name, t.addr, port, t.path("fullchain"), t.path("key"), t.path("chain"), big=False)
            targets.append(t)
        return targets

    def ensure_state(self, targets: list[Target], cert: str) -> None:
        """Every target holds (and, nginx-backed, serves) `cert` before a run."""
        m = self.pki[cert]
        for t in targets:
            if t.state != cert:
                t.write_local(m)
                if t.nginx:
                    t.nginx.reload_and_wait(m["fp"])
                t.state = cert

    def inventory(self, targets: list[Target], cert: str, port: int, addr_of=None, fake_hosts=False, verify_of=None) -> Path:
        """`addr_of(t)`: the host to dial (default t.addr); `verify_of(t)`: the probe's address
        (default: the target's nginx, else the mirror)."""
        j = json.dumps
        m = self.pki[cert]
        lines = [
            "defaults:",
            "  user: root",
            f"  port: {port}",
            f"  identity_file: {j(str(self.client_key))}",
            f"  known_hosts: {j(str(self.known_hosts))}",
            "  connector: ssh",
            "  certificate: www",
            "  verify: { sni: %s, %s }" % (SNI, ", ".join(f"{k}: {v}" for k, v in VERIFY.items())),
            "certificates:",
            f"  www: {{ cert: {j(str(m['cert']))}, chain: {j(str(m['chain']))}, key: {j(str(m['key']))} }}",
            "targets:",
        ]
        mirror = f"{self.mirror.addr}:{self.mirror.port}" if self.mirror else "127.88.250.1:443"
        for t in targets:
            host = f"fake-{t.index:04d}.invalid" if fake_hosts else (addr_of(t) if addr_of else t.addr)
            params = {f"{role}_path": str(t.path(role)) for role in t.roles}
            params["backup_dir"] = str(t.dir / "backups")
            params["tmp_dir"] = str(t.dir)
            lines.append(f"  - name: {t.name}")
            lines.append(f"    host: {j(host)}")
            lines.append("    params: { " + ", ".join(f"{k}: {j(v)}" for k, v in params.items()) + " }")
            if t.nginx:
                test = j(t.nginx.argv("-t", "-q"))
                reload = j(t.nginx.argv("-s", "reload"))
                lines.append(f"    commands: {{ preview: {test}, test: {test}, reload: {reload} }}")
                lines.append(f"    verify: {{ address: {j(verify_of(t) if verify_of else f'{t.nginx.addr}:{t.nginx.port}')} }}")
            else:
                lines.append("    commands: { preview: [true], test: [true], reload: [true] }")
                # the mirror serves the run's certificate before the deploy: a shared endpoint,
                # which certctl refuses to attribute unless told (verify.shared)
                lines.append(f"    verify: {{ address: {j(verify_of(t) if verify_of else mirror)}, shared: true }}")
        self.inv_count += 1
        path = self.dir / "inv" / f"inv-{self.inv_count:03d}-{len(targets)}-{cert}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path


# --------------------------------------------------------------------------------------------
# measuring


class Probe:
    """sshd CPU and log around one measured run."""

    def __init__(self, sshds: list[Sshd]):
        self.sshds = sshds

    def quiesce(self, timeout=20.0) -> None:
        """Waits until no session process of our sshds is left (their CPU is then in cutime)."""
        pids = {s.daemon.pid for s in self.sshds}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(pp in pids for pp in all_ppids().values()):
                return
            time.sleep(0.02)

    def __enter__(self):
        self.quiesce()
        self.cpu0 = sum(s.cpu() for s in self.sshds)
        self.off0 = [s.log_offset() for s in self.sshds]
        return self

    def __exit__(self, *exc):
        self.quiesce()
        self.sshd_cpu = sum(s.cpu() for s in self.sshds) - self.cpu0
        self.log = "".join(s.log_since(o) for s, o in zip(self.sshds, self.off0))
        return False


SESSION_RE = re.compile(r"Starting session: (\S+).* from (\S+) port (\d+)")
ACCEPT_RE = re.compile(r"Accepted publickey for \S+ from (\S+) port (\d+)")


def log_stats(text: str) -> dict:
    """Connections and channels from sshd's VERBOSE log. A connection is keyed by the client's
    address and port until that port is accepted again (ports are reused across a long run)."""
    live: dict[tuple, dict] = {}
    done: list[dict] = []
    accepted = 0
    for line in text.splitlines():
        m = ACCEPT_RE.search(line)
        if m:
            accepted += 1
            key = (m[1], m[2])
            if key in live:
                done.append(live.pop(key))
            live[key] = {"exec": 0, "sftp": 0}
            continue
        m = SESSION_RE.search(line)
        if m:
            c = live.setdefault((m[2], m[3]), {"exec": 0, "sftp": 0})
            c["sftp" if m[1] == "subsystem" else "exec"] += 1
    per = done + list(live.values())
    errors = [l for l in text.splitlines() if re.search(r"\b(error|fatal)\b|drop connection|beginning MaxStartups", l)]
    return {
        "connections": accepted,
        "exec_sessions": sum(c["exec"] for c in per),
        "sftp_sessions": sum(c["sftp"] for c in per),
        "channels_per_connection_max": max((c["exec"] + c["sftp"] for c in per), default=0),
        "maxstartups_drops": text.count("drop connection #"),
        "error_lines": len(errors),
        "error_samples": errors[:5],
    }


def run_certctl(certctl: str, args: list, out_dir: Path, tag: str, nofile=None, timeout=900) -> dict:
    stdout_p, stderr_p = out_dir / f"{tag}.json", out_dir / f"{tag}.stderr"
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.setdefault("NO_COLOR", "1")

    def limit():
        if nofile:  # the soft limit only, as a login session's 1024 would be; the hard one stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with open(stdout_p, "wb") as so, open(stderr_p, "wb") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen([certctl, *map(str, args)], stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=env, preexec_fn=limit)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
    report = None
    try:
        report = json.loads(stdout_p.read_text())
    except (OSError, ValueError):
        pass
    return {
        "rc": p.returncode,
        "wall_s": wall,
        "rss_mb": ru.ru_maxrss / 1024,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "report": report,
        "stderr_tail": stderr_p.read_text(errors="replace")[-2000:],
    }


def summarize_report(report) -> dict:
    """Status counts, mean ms per step, probes per target, distinct errors."""
    if not report:
        return {}
    targets = report.get("targets", [])
    statuses: dict[str, int] = {}
    steps: dict[str, list] = {}
    errors: dict[str, int] = {}
    probes = []
    outside = []  # per target: its duration minus its steps' (time no step accounts for)
    for t in targets:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
        if t.get("duration_ms") is not None:
            outside.append(t["duration_ms"] - sum(s["duration_ms"] for s in t.get("steps", [])))
        for s in t.get("steps", []):
            steps.setdefault(s["step"], []).append(s["duration_ms"])
        probes.append(len(t.get("probes", [])))
        if t.get("error"):
            key = re.sub(r"[tw]\d{4}|127\.(88|90|91)\.\d+\.\d+(:\d+)?|fake-\d+\.invalid|[0-9A-F:]{95}", "…", t["error"])[:300]
            errors[key] = errors.get(key, 0) + 1
    return {
        "statuses": statuses,
        "step_mean_ms": {k: round(sum(v) / len(v), 1) for k, v in steps.items()},
        "step_max_ms": {k: max(v) for k, v in steps.items()},
        "probes_per_target_mean": round(sum(probes) / len(probes), 2) if probes else 0,
        "probes_per_target_max": max(probes, default=0),
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8]),
        "report_duration_ms": report.get("duration_ms"),
        "target_duration_max_ms": max((t["duration_ms"] for t in targets if t.get("duration_ms") is not None), default=None),
        "outside_steps_mean_ms": round(sum(outside) / len(outside), 1) if outside else None,
        "outside_steps_max_ms": max(outside, default=None),
    }


def parallel(argvs: list[list], forks: int, timeout=120) -> dict:
    """Runs argvs with at most `forks` at once; wall, summed client CPU, failures."""
    def one(argv):
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            return r.returncode, r.stderr.decode(errors="replace").strip().splitlines()[-1:] if r.returncode else []
        except subprocess.TimeoutExpired:
            return -1, ["timeout"]

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=forks) as pool:
        results = list(pool.map(one, argvs))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    errors: dict[str, int] = {}
    for rc, err in results:
        if rc != 0:
            key = re.sub(r"127\.88\.\d+\.\d+|port \d+", "…", (err or ["?"])[0])[:200]
            errors[key] = errors.get(key, 0) + 1
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "failed": sum(1 for rc, _ in results if rc != 0),
        "total": len(argvs),
        "errors": errors,
    }


def tls_floor(addrs: list[str], forks: int) -> dict:
    """N in-process TLS handshakes (Python's ssl = OpenSSL), `forks` at once: no process spawn."""
    def one(addr):
        host, port = addr.rsplit(":", 1)
        return served_fingerprint(host, int(port), timeout=10) is not None

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=forks) as pool:
        ok = list(pool.map(one, addrs))
    return {"wall_s": time.perf_counter() - t0, "cpu_s": None, "sshd_cpu_s": 0.0, "failed": ok.count(False), "total": len(addrs), "ok": all(ok)}


def ssh_argv(lab: Lab, host: str, port: int, kex: str | None = None) -> list:
    return ["ssh", "-F", "/dev/null", *(["-o", f"KexAlgorithms={kex}"] if kex else []), "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", str(lab.client_key), "-p", str(port), "-l", "root", host, "true"]


def probe_argv(addr: str) -> list:
    host, port = addr.rsplit(":", 1)
    return ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", SNI]


# --------------------------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args, lab: Lab, certctl: str):
        self.a, self.lab, self.certctl = args, lab, certctl
        self.failures: list[str] = []
        self.out = lab.dir / "out"
        self.n_runs = 0
        self.last_deployed: set = set()
        self.kex: str | None = None

    def tag(self, what: str) -> str:
        self.n_runs += 1
        return f"{self.n_runs:04d}-{what}"

    def certctl_run(self, sshds, cmd: list, inv: Path, expect: str | None, what: str, nofile=None) -> dict:
        args = cmd[:1] + ["-i", inv] + cmd[1:]
        if expect is not None:
            args += ["--output", "json"]
        load = os.getloadavg()[0]
        with Probe(sshds) as pr:
            r = run_certctl(self.certctl, args, self.out, self.tag(what), nofile=nofile)
        r["loadavg_1m"] = load
        r["sshd_cpu_s"] = pr.sshd_cpu
        r["sshd_log"] = log_stats(pr.log)
        report = r.pop("report")
        r["summary"] = summarize_report(report)
        self.last_deployed = {t["name"] for t in (report or {}).get("targets", []) if t.get("status") == "deployed"}
        if expect is None:
            r["ok"] = r["rc"] == 0
        else:
            st = r["summary"].get("statuses", {})
            r["ok"] = r["rc"] == 0 and sum(st.values()) > 0 and set(st) == {expect}
        if r["ok"]:
            r.pop("stderr_tail")
        return r

    def floor_run(self, sshds, argvs, forks) -> dict:
        load = os.getloadavg()[0]
        with Probe(sshds) as pr:
            r = parallel(argvs, forks)
        r["loadavg_1m"] = load
        r["sshd_cpu_s"] = pr.sshd_cpu
        r["sshd_log"] = log_stats(pr.log)
        r["ok"] = r["failed"] == 0
        return r

    def detect_kex(self, target: Target) -> dict:
        """What certctl (russh) and a default OpenSSH client negotiate: a DEBUG1 sshd, one of each."""
        lab = self.lab
        sshd = lab.sshd_group("kex", ["127.88.3.1"], None, None, log_level="DEBUG1")[0]
        inv = lab.inventory([target], other(target.state), sshd.port, addr_of=lambda t: "127.88.3.1")
        off = sshd.log_offset()
        r = self.certctl_run([sshd], ["deploy", "--dry-run"], inv, "would-change", "kex-certctl")
        certctl_log = sshd.log_since(off)
        off = sshd.log_offset()
        subprocess.run(ssh_argv(lab, "127.88.3.1", sshd.port), stdin=subprocess.DEVNULL, capture_output=True)
        ssh_log = sshd.log_since(off)
        sshd.daemon.stop()

        def grab(text):
            kex = re.search(r"kex: algorithm: (\S+)", text)
            hk = re.search(r"kex: host key algorithm: (\S+)", text)
            ci = re.search(r"kex: client->server cipher: (\S+)", text)
            return {"kex": kex and kex[1], "host_key": hk and hk[1], "cipher": ci and ci[1]}

        out = {"certctl": grab(certctl_log), "openssh_default": grab(ssh_log), "certctl_dry_run_ok": r["ok"]}
        self.kex = out["certctl"]["kex"]
        return out

    def matrix(self, pool: list[Target], sshds: list[Sshd], port: int) -> list[dict]:
        a, lab = self.a, self.lab
        rows = []
        for n in a.sizes:
            targets = pool[:n]
            inv_cache: dict[str, Path] = {}

            def inv(cert):
                if cert not in inv_cache:
                    inv_cache[cert] = lab.inventory(targets, cert, port)
                return inv_cache[cert]

            check_runs = [self.certctl_run(sshds, ["check"], inv("A"), None, f"check-{n}") for _ in range(a.runs)]
            rows.append(self.row(n, None, "check", check_runs, {}))
            for forks in a.forks:
                runs = {k: [] for k in ("deploy", "dry-run", "verify", "ssh", "ssh-default-kex", "s_client", "tls-inproc")}
                for rep in range(a.runs):
                    log(f"  N={n} forks={forks} run {rep + 1}/{a.runs}")
                    new = other(targets[0].state)
                    lab.ensure_state(targets, other(new))
                    lab.set_mirror(new)
                    runs["deploy"].append(self.certctl_run(sshds, ["deploy", "--forks", forks], inv(new), "deployed", f"deploy-{n}-{forks}"))
                    for t in targets:
                        if t.name in self.last_deployed:
                            t.state = new
                    # dry-run of the other certificate: stages and previews on every target.
                    lab.ensure_state(targets, new)
                    runs["dry-run"].append(self.certctl_run(sshds, ["deploy", "--dry-run", "--forks", forks], inv(other(new)), "would-change", f"dry-{n}-{forks}"))
                    runs["verify"].append(self.certctl_run(sshds, ["verify", "--forks", forks], inv(new), "ok", f"verify-{n}-{forks}"))
                    runs["ssh"].append(self.floor_run(sshds, [ssh_argv(lab, t.addr, port, self.kex) for t in targets], forks))
                    runs["ssh-default-kex"].append(self.floor_run(sshds, [ssh_argv(lab, t.addr, port) for t in targets], forks))
                    vaddrs = [self.verify_addr(t) for t in targets]
                    runs["s_client"].append(self.floor_run(sshds, [probe_argv(x) for x in vaddrs], forks))
                    runs["tls-inproc"].append(tls_floor(vaddrs, forks))
                ssh_floors = {"ssh": runs["ssh"], "ssh-default-kex": runs["ssh-default-kex"]}
                rows.append(self.row(n, forks, "deploy", runs["deploy"], ssh_floors))
                rows.append(self.row(n, forks, "dry-run", runs["dry-run"], ssh_floors))
                rows.append(self.row(n, forks, "verify", runs["verify"], {"s_client": runs["s_client"], "tls-inproc": runs["tls-inproc"]}))
        return rows

    def verify_addr(self, t: Target) -> str:
        return f"{t.nginx.addr}:{t.nginx.port}" if t.nginx else f"{self.lab.mirror.addr}:{self.lab.mirror.port}"

    def row(self, n, forks, cmd, runs, floors: dict) -> dict:
        """One table row: medians of certctl's runs and of each floor (the first floor is the ratio's)."""
        ok = all(r["ok"] for r in runs)
        for r in runs:
            if not r["ok"]:
                self.failures.append(f"N={n} forks={forks} {cmd}: rc={r['rc']} statuses={r['summary'].get('statuses')} "
                                     f"errors={r['summary'].get('errors')} stderr={r.get('stderr_tail', '')[-400:]!r}")
        med = {k: median([r[k] for r in runs]) for k in ("wall_s", "rss_mb", "cpu_s", "sshd_cpu_s")}
        row = {"n": n, "forks": forks, "command": cmd, "ok": ok, "median": med, "runs": runs, "floors": {}}
        for kind, fruns in floors.items():
            fmed = {k: median([r[k] for r in fruns]) for k in ("wall_s", "cpu_s", "sshd_cpu_s")}
            row["floors"][kind] = {
                "median": fmed,
                "ok": all(r["ok"] for r in fruns),
                "ratio_wall": med["wall_s"] / fmed["wall_s"] if fmed["wall_s"] else None,
                "ratio_sshd_cpu": med["sshd_cpu_s"] / fmed["sshd_cpu_s"] if kind.startswith("ssh") and fmed["sshd_cpu_s"] else None,
                "runs": fruns,
            }
        return row

    # ---- variants and scale checks (item 6) ---------------------------------------------------

    def timed_many(self, argv: list, count: int) -> dict:
        walls = []
        for _ in range(count):
            t0 = time.perf_counter()
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(walls), "min_s": min(walls), "runs": len(walls)}

    def scale(self) -> dict:
        a, lab = self.a, self.lab
        out = {}
        log("scale: --version")
        out["version"] = {"certctl": self.timed_many([self.certctl, "--version"], 30), "floor_bin_true": self.timed_many(["/bin/true"], 30)}

        log(f"scale: {a.scale_targets} targets (directories, material)")
        root = lab.dir / "scale"
        addrs = [f"127.88.{4 + i // 200}.{1 + i % 200}" for i in range(a.scale_addresses)]
        targets = lab.make_targets(root, a.scale_targets, addrs, nginx_every=0)

        inv_fake = lab.inventory(targets, "A", 22, fake_hosts=True)
        checks = [self.certctl_run([], ["check"], inv_fake, None, "check-1000") for _ in range(max(a.runs, 5))]
        out["check_1000"] = {"median_s": median([r["wall_s"] for r in checks]), "rss_mb": median([r["rss_mb"] for r in checks]),
                             "cpu_s": median([r["cpu_s"] for r in checks]), "ok": all(r["ok"] for r in checks),
                             "walls": [r["wall_s"] for r in checks], "inventory_bytes": inv_fake.stat().st_size}

        log(f"scale: one sshd on {a.scale_addresses} addresses")
        out["one_sshd_many_addresses"] = self.one_sshd_on(addrs)

        nsshd = -(-len(addrs) // SSHD_MAX_LISTEN)
        log(f"scale: {len(addrs)} addresses over {nsshd} sshds (MaxStartups {a.max_startups})")
        sshds = lab.sshd_group("scale", addrs, a.max_startups, a.max_sessions)
        port = sshds[0].port
        lab.set_mirror("B")
        inv = lab.inventory(targets, "B", port)  # the targets hold A: every one would change
        dry = []
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        for forks, nofile in [(50, None), (200, None), (1000, 1024), (1000, None)]:
            log(f"  dry-run {a.scale_targets} targets, --forks {forks}, nofile {nofile or soft}")
            r = self.certctl_run(sshds, ["deploy", "--dry-run", "--forks", forks], inv, "would-change", f"scale-dry-{forks}", nofile=nofile)
            dry.append({"forks": forks, "nofile": nofile or soft, "sshds": nsshd,
                        **{k: r[k] for k in ("rc", "ok", "wall_s", "rss_mb", "cpu_s", "sshd_cpu_s", "loadavg_1m", "summary", "sshd_log")},
                        "stderr_tail": r.get("stderr_tail", "")[-1500:]})
        out["dry_run_1000"] = dry
        return out

    def one_sshd_on(self, addrs: list[str]) -> dict:
        """Starts ONE sshd with a ListenAddress per address: does it run?"""
        lab = self.lab
        port = free_port(addrs)
        d = lab.dir / "sshd"
        conf = d / "one-big.conf"
        conf.write_text("".join(f"ListenAddress {x}:{port}\n" for x in addrs)
                        + f"HostKey {lab.host_key}\nPidFile {d / 'one-big.pid'}\nUsePAM no\nLogLevel VERBOSE\n")
        test = run(["/usr/sbin/sshd", "-t", "-f", conf], check=False)
        logp = d / "one-big.log"
        dm = Daemon("sshd one-big", ["/usr/sbin/sshd", "-D", "-f", conf, "-E", logp], logp)
        lab.daemons.append(dm)
        try:
            dm.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        running = dm.alive()
        listening = sum(1 for x in addrs if _connects(x, port)) if running else 0
        dm.stop()
        text = read_tail(logp)
        return {"addresses": len(addrs), "sshd_t_rc": test.returncode, "running_after_5s": running, "exit_code": dm.proc.returncode,
                "listening": listening, "log_tail": [l for l in text.splitlines() if "listening on" not in l][-3:]}

    def variant(self, name: str, pool: list[Target], n: int, forks: int, addr_block: int, max_startups, max_sessions, clean_shell: bool) -> dict:
        """deploy, dry-run and the ssh floor against a differently configured sshd."""
        lab = self.lab
        addrs = [f"127.88.{addr_block}.{i + 1}" for i in range(SSHD_MAX_LISTEN)]
        sshds = lab.sshd_group(name, addrs, max_startups, max_sessions, clean_shell)
        port = sshds[0].port
        targets = pool[:n]
        addr_of = lambda t: addrs[t.index % len(addrs)]  # noqa: E731
        out = {"name": name, "n": n, "forks": forks, "max_startups": max_startups or "default (10:30:100)",
               "max_sessions": max_sessions or "default (10)", "clean_shell": clean_shell, "runs": []}
        for rep in range(self.a.runs):
            log(f"  {name}: N={n} forks={forks} run {rep + 1}/{self.a.runs}")
            new = other(targets[0].state)
            lab.ensure_state(targets, other(new))
            lab.set_mirror(new)
            dep = self.certctl_run(sshds, ["deploy", "--forks", forks], lab.inventory(targets, new, port, addr_of=addr_of), "deployed", f"{name}-deploy")
            for t in targets:
                if t.name in self.last_deployed:
                    t.state = new
            lab.ensure_state(targets, new)
            dry = self.certctl_run(sshds, ["deploy", "--dry-run", "--forks", forks], lab.inventory(targets, other(new), port, addr_of=addr_of), "would-change", f"{name}-dry")
            floor = self.floor_run(sshds, [ssh_argv(lab, addr_of(t), port, self.kex) for t in targets], forks)
            keep = ("rc", "ok", "wall_s", "rss_mb", "cpu_s", "sshd_cpu_s", "loadavg_1m", "summary", "sshd_log")
            out["runs"].append({"deploy": {k: dep.get(k) for k in keep}, "dry_run": {k: dry.get(k) for k in keep},
                                "ssh_floor": {k: floor[k] for k in ("wall_s", "cpu_s", "sshd_cpu_s", "failed", "total", "errors", "sshd_log")}})
        for s in sshds:
            s.daemon.stop()
        for k, sub in (("deploy_wall_s", "deploy"), ("dry_run_wall_s", "dry_run"), ("ssh_floor_wall_s", "ssh_floor")):
            out[k] = median([r[sub]["wall_s"] for r in out["runs"]])
        for k, sub in (("deploy_sshd_cpu_s", "deploy"), ("ssh_floor_sshd_cpu_s", "ssh_floor")):
            out[k] = median([r[sub]["sshd_cpu_s"] for r in out["runs"]])
        return out


def _connects(host, port) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# output


def fmt(x, nd=2, unit=""):
    return "—" if x is None else f"{x:.{nd}f}{unit}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'N':>4} {'forks':>5} {'command':<8} {'wall s':>7} {'floor1':>7} {'ratio1':>6} {'floor2':>7} {'ratio2':>6} "
            f"{'RSS MB':>6} {'cpu s':>6} {'sshd cpu':>8} {'floor1 sshd':>11} {'conn/exec/sftp':>14} {'probes':>6}  ok")
    print(head)
    print("-" * len(head))
    for r in rows:
        m, n = r["median"], r["n"]
        fl = list(r["floors"].values())
        f1 = fl[0] if fl else {}
        f2 = fl[1] if len(fl) > 1 else {}
        lg = r["runs"][0].get("sshd_log", {})
        per = f"{lg['connections'] / n:.1f}/{lg['exec_sessions'] / n:.1f}/{lg['sftp_sessions'] / n:.1f}" if lg.get("connections") else "—"
        probes = r["runs"][0].get("summary", {}).get("probes_per_target_mean")
        f1sshd = f1.get("median", {}).get("sshd_cpu_s") if r["command"] != "verify" else None
        floors_ok = all(f["ok"] for f in fl)
        print(f"{n:>4} {r['forks'] or '':>5} {r['command']:<8} {fmt(m['wall_s'], 3):>7} "
              f"{fmt(f1.get('median', {}).get('wall_s'), 3):>7} {fmt(f1.get('ratio_wall')):>6} "
              f"{fmt(f2.get('median', {}).get('wall_s'), 3):>7} {fmt(f2.get('ratio_wall')):>6} "
              f"{fmt(m['rss_mb'], 1):>6} {fmt(m['cpu_s']):>6} {fmt(m['sshd_cpu_s']):>8} {fmt(f1sshd):>11} {per:>14} "
              f"{fmt(probes, 1):>6}  {'yes' if r['ok'] else 'NO'}{'' if floors_ok else ' (a floor run failed)'}")


def issue_targets(rows: list[dict], scale: dict | None, wan: dict | None = None) -> list[dict]:
    def find(n, forks, cmd):
        return next((r for r in rows if r["n"] == n and r["forks"] == forks and r["command"] == cmd), None)

    out = []

    def add(name, value, limit, unit=""):
        out.append({"target": name, "measured": value, "limit": limit, "met": None if value is None else value <= limit, "unit": unit})

    d50 = find(50, 50, "deploy")
    if d50:
        add("N=50 f=50 deploy / ssh floor (same kex)", d50["floors"]["ssh"]["ratio_wall"], 2.0, "x")
        add("N=50 f=50 deploy / ssh floor (OpenSSH kex)", d50["floors"]["ssh-default-kex"]["ratio_wall"], 2.0, "x")
        add("N=50 f=50 deploy wall", d50["median"]["wall_s"], 3.0, "s")
    v50 = find(50, 50, "verify")
    if v50:
        add("N=50 f=50 verify / s_client floor", v50["floors"]["s_client"]["ratio_wall"], 1.5, "x")
        add("N=50 f=50 verify / in-process TLS floor", v50["floors"]["tls-inproc"]["ratio_wall"], 1.5, "x")
    d200 = find(200, 50, "deploy")
    if d200:
        add("N=200 f=50 deploy / ssh floor (same kex)", d200["floors"]["ssh"]["ratio_wall"], 2.0, "x")
        add("N=200 f=50 deploy / ssh floor (OpenSSH kex)", d200["floors"]["ssh-default-kex"]["ratio_wall"], 2.0, "x")
        add("N=200 f=50 deploy peak RSS", d200["median"]["rss_mb"], 40.0, "MB")
    if scale:
        add("certctl --version", scale["version"]["certctl"]["median_s"] * 1000, 5.0, "ms")
        add("certctl check, 1,000 targets", scale["check_1000"]["median_s"] * 1000, 150.0, "ms")
    if wan:  # the issue states its round-trip goals at 100 ms (at a smaller RTT local time weighs more)
        for rtt in [r for r in wan["rtts_ms"] if r == 100]:
            by = {(r["n"], r["job"]): r for r in wan["rows"] if r["rtt_ms"] == rtt}
            for job, limit in (("deploy", 20), ("dry-run", 15), ("verify", 2)):
                if (1, job) in by:
                    add(f"WAN {rtt:g} ms N=1 {job} round trips", by[(1, job)]["round_trips"], limit, "RT")
            big = max(wan["sizes"])
            if big > 1 and (1, "deploy") in by and (big, "deploy") in by:
                add(f"WAN {rtt:g} ms N={big} f={wan['forks']} deploy / N=1", by[(big, "deploy")]["round_trips"] / by[(1, "deploy")]["round_trips"], 1.1, "x")
    return out


def parse_rtt_ms(text: str) -> float:
    """'100ms', '0.1s' or '100' (milliseconds) -> milliseconds."""
    t = text.strip()
    if t.endswith("ms"):
        return float(t[:-2])
    if t.endswith("s"):
        return float(t[:-1]) * 1000
    return float(t)


def git_info() -> dict:
    def g(*args):
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    return {"sha": g("rev-parse", "HEAD"), "short": g("rev-parse", "--short=10", "HEAD"), "dirty": bool(g("status", "--porcelain", "--untracked-files=no"))}


def tool_versions() -> dict:
    def v(argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else None

    return {"openssh": v(["ssh", "-V"]), "nginx": v(["/usr/sbin/nginx", "-v"]), "openssl": v(["openssl", "version"]),
            "kernel": platform.release(), "python": platform.python_version(), "nproc": os.cpu_count(),
            "loadavg_before": os.getloadavg(), "nofile_soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


# --------------------------------------------------------------------------------------------


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)
    p = argparse.ArgumentParser(description="certctl fleet benchmark (see bench/README.md)")
    p.add_argument("--smoke", action="store_true", help="N=5, forks 10, one run, no scale checks, and the WAN mode at N=1, RTT 20 ms; "
                   "fails only if certctl fails")
    p.add_argument("--wan", action="store_true", help="the WAN mode only (same as --parts wan): a delay forwarder in front of every "
                   "target's sshd and TLS port, round trips per job")
    p.add_argument("--rtt", default=None, help="WAN round-trip times, e.g. 100ms or 50ms,250ms (default 100ms; smoke 20ms)")
    p.add_argument("--wan-sizes", default=None, help="WAN fleet sizes N (default 1,50; smoke 1)")
    p.add_argument("--wan-forks", type=int, default=50, help="WAN --forks, for certctl and the floors (default 50)")
    p.add_argument("--sftp-log", action="store_true", help="WAN: the external sftp-server logging each request (-l DEBUG1) "
                   "instead of internal-sftp, counted per job; for analysis (it adds a process per SFTP channel)")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported (default 3)")
    p.add_argument("--sizes", default="1,10,50,200", help="fleet sizes N (default 1,10,50,200)")
    p.add_argument("--forks", default="10,50", help="--forks values (default 10,50)")
    p.add_argument("--addresses", type=int, default=SSHD_MAX_LISTEN, help="sshd addresses for the matrix (16 per sshd)")
    p.add_argument("--nginx-every", type=int, default=10, help="one real nginx-backed target per this many (default 10)")
    p.add_argument("--max-startups", default="200:30:400")
    p.add_argument("--max-sessions", default="50")
    p.add_argument("--no-scale", action="store_true", help="same as --parts matrix")
    p.add_argument("--parts", default="matrix,variants,scale", help="what to run: matrix (N x forks), variants (default MaxStartups, "
                   "login rc files), scale (--version, 1,000-target check and dry-run), wan (the WAN mode); default all but wan")
    p.add_argument("--login-rc", action="store_true", help="matrix sshd without SetEnv SHLVL=1: bash sources the user's ~/.bashrc per channel")
    p.add_argument("--scale-targets", type=int, default=1000)
    p.add_argument("--scale-addresses", type=int, default=50)
    p.add_argument("--certctl", help="certctl binary (default: cargo build --release, then target/release/certctl)")
    p.add_argument("--no-build", action="store_true", help="use target/release/certctl as it is")
    p.add_argument("--out", help="JSON results path (default bench/results/DATE-SHA.json; smoke: none)")
    p.add_argument("--keep", action="store_true", help="keep the lab directory (processes are always stopped)")
    a = p.parse_args()
    if a.smoke:
        a.sizes, a.forks, a.runs, a.parts = "5", "10", 1, "matrix,wan"
        a.rtt, a.wan_sizes = a.rtt or "20ms", a.wan_sizes or "1"
    if a.no_scale:
        a.parts = "matrix"
    if a.wan:
        a.parts = "wan"
    a.parts = set(a.parts.split(","))
    a.rtts_ms = [parse_rtt_ms(x) for x in (a.rtt or "100ms").split(",")]
    a.wan_sizes = [int(x) for x in (a.wan_sizes or "1,50").split(",")]
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.forks = [int(x) for x in a.forks.split(",")]

    if os.geteuid() != 0:
        log("run as root (targets log in as root; sshd needs root)")
        return 2
    for tool in ("/usr/sbin/sshd", "/usr/sbin/nginx", "ssh", "openssl", "ssh-keygen"):
        if not shutil.which(tool):
            log(f"missing: {tool} (apt-get install openssh-server openssh-client nginx openssl)")
            return 2

    certctl = a.certctl
    if not certctl:
        if not a.no_build:
            log("building certctl (release)")
            r = subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(ROOT / "Cargo.toml")])
            if r.returncode != 0:
                return 2
        certctl = str(ROOT / "target/release/certctl")
    version = subprocess.run([certctl, "--version"], capture_output=True, text=True).stdout.strip()

    lab = Lab(a.keep)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.datetime.now(datetime.timezone.utc)
    result = {"schema": 1, "started_at": started.isoformat(timespec="seconds"), "git": git_info(), "certctl": {"path": certctl, "version": version},
              "machine": tool_versions(), "config": {"runs": a.runs, "sizes": a.sizes, "forks": a.forks, "addresses": a.addresses,
              "nginx_every": a.nginx_every, "max_startups": a.max_startups, "max_sessions": a.max_sessions, "verify": VERIFY, "smoke": a.smoke, "parts": sorted(a.parts),
              "clean_shell": not a.login_rc, "wan_rtts_ms": a.rtts_ms, "wan_sizes": a.wan_sizes, "wan_forks": a.wan_forks, "sftp_log": a.sftp_log}}
    bench = Bench(a, lab, certctl)
    try:
        log(f"lab in {lab.dir}")
        addrs = [f"127.88.0.{i + 1}" for i in range(a.addresses)]
        sshds = lab.sshd_group("main", addrs, a.max_startups, a.max_sessions, clean_shell=not a.login_rc)
        lab.start_mirror()
        # the WAN mode has targets of its own; the matrix's pool then only feeds detect_kex
        pool = lab.make_targets(lab.dir / "targets", max(a.sizes) if a.parts & {"matrix", "variants"} else 1, addrs, a.nginx_every)
        log(f"{len(sshds)} sshd on {len(addrs)} addresses, {sum(1 for t in pool if t.nginx)} nginx-backed targets of {len(pool)}, mirror nginx")
        result["negotiated"] = bench.detect_kex(pool[0])
        log(f"negotiated: {result['negotiated']}")
        result["matrix"] = bench.matrix(pool, sshds, sshds[0].port) if "matrix" in a.parts else []
        scale = None
        if "variants" in a.parts:
            n = min(50, len(pool))
            log(f"variant: OpenSSH default MaxStartups/MaxSessions, N={n} forks=50")
            result["variant_default_maxstartups"] = bench.variant("defaults", pool, n, 50, 1, None, None, True)
            log(f"variant: login shell rc files (root's ~/.bashrc) sourced per channel, N={n} forks=50")
            result["variant_login_rc"] = bench.variant("login-rc", pool, n, 50, 2, a.max_startups, a.max_sessions, False)
        if "scale" in a.parts:
            scale = bench.scale()
            result["scale"] = scale
        if "wan" in a.parts:
            import wan  # noqa: PLC0415 (bench/wan.py imports this module: see the alias at the top)

            log(f"wan: RTT {', '.join(f'{r:g} ms' for r in a.rtts_ms)}, N = {', '.join(map(str, a.wan_sizes))}, forks {a.wan_forks}")
            result["wan"] = wan.Wan(bench, a.rtts_ms, a.wan_sizes, a.wan_forks).run()
        result["issue_targets"] = issue_targets(result["matrix"], scale, result.get("wan"))
        result["failures"] = bench.failures
        result["duration_s"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    finally:
        lab.close()

    print()
    ng = result["negotiated"]
    print(f"certctl {version}  git {result['git']['short']}{' (dirty)' if result['git']['dirty'] else ''}  "
          f"{result['machine']['nproc']} cores, load before {result['machine']['loadavg_before'][0]:.2f}; "
          f"kex certctl {ng['certctl']['kex']}, OpenSSH default {ng['openssh_default']['kex']}")
    if result["matrix"]:
        print_table(result["matrix"])
        print("\ndeploy, dry-run: floor1 = N bare `ssh host true` with certctl's kex, floor2 = the same with OpenSSH's default kex;")
        print("verify: floor1 = N `openssl s_client` processes, floor2 = N in-process TLS handshakes. ratio = certctl wall / floor wall,")
        print("same --forks. conn/exec/sftp = sshd connections, exec channels, sftp channels per target (sshd VERBOSE log, first run).")
    for key in ("variant_default_maxstartups", "variant_login_rc"):
        v = result.get(key)
        if v:
            r0 = v["runs"][0]
            print(f"\n{v['name']} (MaxStartups {v['max_startups']}, MaxSessions {v['max_sessions']}, clean shell {v['clean_shell']}), N={v['n']} forks={v['forks']}: "
                  f"deploy {fmt(v['deploy_wall_s'])} s, dry-run {fmt(v['dry_run_wall_s'])} s, ssh floor {fmt(v['ssh_floor_wall_s'])} s; "
                  f"sshd cpu deploy {fmt(v['deploy_sshd_cpu_s'])} s vs floor {fmt(v['ssh_floor_sshd_cpu_s'])} s")
            print(f"    first run: deploy {r0['deploy']['summary'].get('statuses')}, dry-run {r0['dry_run']['summary'].get('statuses')}, "
                  f"floor failed {r0['ssh_floor']['failed']}/{r0['ssh_floor']['total']}, sshd MaxStartups drops "
                  f"{r0['deploy']['sshd_log']['maxstartups_drops']}/{r0['dry_run']['sshd_log']['maxstartups_drops']}/{r0['ssh_floor']['sshd_log']['maxstartups_drops']}")
            for e, c in list(r0["deploy"]["summary"].get("errors", {}).items())[:3]:
                print(f"      deploy {c}× {e}")
            for e, c in list(r0["ssh_floor"].get("errors", {}).items())[:2]:
                print(f"      ssh    {c}× {e}")
    if result.get("scale"):
        s = result["scale"]
        print(f"\n--version median {s['version']['certctl']['median_s'] * 1000:.1f} ms (/bin/true {s['version']['floor_bin_true']['median_s'] * 1000:.1f} ms); "
              f"check {a.scale_targets} targets median {s['check_1000']['median_s'] * 1000:.0f} ms, RSS {s['check_1000']['rss_mb']:.1f} MB")
        o = s["one_sshd_many_addresses"]
        print(f"one sshd on {o['addresses']} addresses: sshd -t rc {o['sshd_t_rc']}, running after 5 s: {o['running_after_5s']}, exit {o['exit_code']}: {o['log_tail']}")
        for d in s["dry_run_1000"]:
            print(f"dry-run {a.scale_targets} targets ({d['sshds']} sshds) forks {d['forks']} nofile {d['nofile']}: rc {d['rc']} wall {d['wall_s']:.2f} s "
                  f"RSS {d['rss_mb']:.1f} MB cpu {d['cpu_s']:.2f} s statuses {d['summary'].get('statuses')} sshd drops {d['sshd_log']['maxstartups_drops']}")
            for e, c in d["summary"].get("errors", {}).items():
                print(f"    {c}× {e}")
    if result.get("wan"):
        import wan  # noqa: PLC0415

        wan.print_tables(result["wan"])
    if result["issue_targets"]:
        print("\nissue targets (informational; never the exit code):")
        for t in result["issue_targets"]:
            met = "—" if t["met"] is None else ("met" if t["met"] else "MISSED")
            print(f"  {t['target']:<46} {fmt(t['measured'])} {t['unit']:<2} (≤ {t['limit']}): {met}")

    name = f"{started:%Y-%m-%d}-{result['git']['short'] or 'nogit'}{'-wan' if a.parts == {'wan'} else ''}{'-dirty' if result['git']['dirty'] else ''}"
    out = a.out or (None if a.smoke else str(ROOT / "bench/results" / f"{name}.json"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"\nresults: {out}")
    if bench.failures:
        print("\ncertctl FAILED:")
        for f in bench.failures:
            print(f"  {f}")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

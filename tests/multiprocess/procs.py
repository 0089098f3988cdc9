"""Real child processes for the multi-process tests: daphne web processes,
`manage.py flex_worker` workers and a private redis-server.

Each `Proc` writes its output to a log file; a `ProcGroup` remembers every
process a test started, stops them all at teardown and prints their logs
when the test failed.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 20.0, proc: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before listening:\n{proc.logs()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s" + (f":\n{proc.logs()}" if proc else ""))


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, env=env, cwd=BASE_DIR, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a crash."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in `timeout`."""
        if self.alive:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.popen.returncode

    def logs(self, tail: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:]

    def proc_status(self, field: str) -> int:
        """A numeric field of /proc/<pid>/status (Threads, VmRSS in kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def threads(self) -> int:
        return self.proc_status("Threads")

    def rss_kb(self) -> int:
        return self.proc_status("VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class ProcGroup:
    """The processes of one test."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[Proc] = []
        self.log_dir = Path(tempfile.mkdtemp(prefix="flex-mp-"))
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}-{self._count}"

    def start(self, kind: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        name = self._name(kind)
        # PGAPPNAME (libpq): lets a test count one process's PostgreSQL connections.
        proc = Proc(name, argv, {**self.env, "PGAPPNAME": f"flex-{name}", **(env or {})}, self.log_dir)
        self.procs.append(proc)
        return proc

    def daphne(self, *, port: int | None = None, env: dict[str, str] | None = None) -> tuple[Proc, int]:
        port = port or free_port()
        # The Procfile's web command (docs/deployment.md).
        proc = self.start("daphne", [sys.executable, "-m", "flexagents.serve", "-b", "127.0.0.1", "-p", str(port)],
                          env)
        wait_for_port(port, proc=proc)
        return proc, port

    def worker(self, *args: str, env: dict[str, str] | None = None, ready: bool = True) -> Proc:
        proc = self.start("worker", [sys.executable, "manage.py", "flex_worker", *args], env)
        if ready:
            wait_for(lambda: "flex_worker started" in proc.logs() or not proc.alive, timeout=20,
                     what=f"{proc.name} to start")
            if not proc.alive:
                raise RuntimeError(f"{proc.name} died at start:\n{proc.logs()}")
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop(timeout=5)
            except Exception:  # noqa: BLE001 — teardown must go on
                pass

    def remove_logs(self) -> None:
        """Delete the log directory (after a test that passed, or once its logs were printed)."""
        import shutil

        shutil.rmtree(self.log_dir, ignore_errors=True)

    def dump_logs(self) -> str:
        return "\n".join(f"===== {p.name} (pid {p.pid}, rc {p.popen.returncode}) {' '.join(p.argv[-3:])}\n{p.logs()}"
                         for p in self.procs)


class PrivateRedis:
    """A redis-server on a free port, owned by one test (never the shared one)."""

    def __init__(self) -> None:
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes"], check=True, capture_output=True)
        wait_for_port(self.port, timeout=10)

    def shutdown(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        wait_for(lambda: not _listening(self.port), timeout=10, what="redis to stop")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def child_database_url() -> str:
    """DATABASE_URL of the test database, for child processes (daphne,
    flex_worker): the SQLite test file, or the PostgreSQL test database."""
    from urllib.parse import urlparse, urlunparse

    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return "sqlite:///" + str(Path(db["TEST"]["NAME"]).resolve())
    parsed = urlparse(settings.DATABASE_URL)
    return urlunparse(parsed._replace(path="/" + connection.settings_dict["NAME"]))


PUSHPIN_KEY = "flex-multiprocess-pushpin-signature-key"


class Pushpin:
    """A real Pushpin (Debian package `pushpin`, with condure and zurl) on
    free ports, running unprivileged from a private directory: its own
    config, routes, run and log directories, and a copy of the package's
    internal config and templates (the package points zurl at a system
    service under /var/run and denies 127.* in zurl's template: here zurl
    is one of Pushpin's own services and may reach the local origins)."""

    LIB = Path("/usr/lib/pushpin")

    def __init__(self, group: ProcGroup, origins: list[int], *, key: str = PUSHPIN_KEY) -> None:
        import shutil

        self.group = group
        self.key = key
        self.port = free_port()
        self.publish_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="flex-pushpin-"))
        for sub in ("run", "log", "lib/runner"):
            (self.dir / sub).mkdir(parents=True)
        for template in (self.LIB / "runner").glob("*.template"):
            text = template.read_text()
            if template.name.startswith("zurl"):
                text = "\n".join("deny=" if line.startswith("deny=") else line for line in text.splitlines()) + "\n"
            (self.dir / "lib/runner" / template.name).write_text(text)
        internal = (self.LIB / "internal.conf").read_text().replace("ipc:///var/run/zurl/zurl-",
                                                                    "ipc://{rundir}/{ipc_prefix}zurl-")
        (self.dir / "lib/internal.conf").write_text(internal)
        self.routes = self.dir / "routes"
        self.set_origins(origins)
        self.config = self.dir / "pushpin.conf"
        self.config.write_text(f"""[global]
include={{libdir}}/internal.conf
libdir={self.dir / 'lib'}
rundir={self.dir / 'run'}
ipc_prefix=flexpp-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{self.port}
logdir={self.dir / 'log'}
log_level={os.environ.get("FLEX_PUSHPIN_LOG_LEVEL", "2")}
client_buffer_size=8192
client_maxconn=50000
condure_bin={shutil.which('condure') or 'condure'}
zurl_bin={shutil.which('zurl') or 'zurl'}

[proxy]
routesfile={self.routes}
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
sig_iss=pushpin
sig_key={key}
updates_check=off

[handler]
push_in_spec=tcp://127.0.0.1:{free_port()}
push_in_sub_specs=tcp://127.0.0.1:{free_port()}
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={self.publish_port}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=tcp://127.0.0.1:{free_port()}
# Deliveries (one per message and connection, weighted by size) per second,
# and how many may wait: past the hwm Pushpin drops deliveries, and each drop
# costs its connection a recovery request (runs.grip). The package's 2,500/s
# and 25,000 would throttle a run followed by thousands.
message_rate=1000000
message_hwm=50000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
""")
        self.proc: Proc | None = None

    @staticmethod
    def available() -> bool:
        import shutil

        return all(shutil.which(b) for b in ("pushpin", "condure", "zurl")) and (Pushpin.LIB / "internal.conf").exists()

    def set_origins(self, origins: list[int]) -> None:
        """One route, its targets separated by spaces (a comma would start a
        target's options): tried in order, the next one when a target refuses
        the connection."""
        self.routes.write_text("* " + " ".join(f"127.0.0.1:{p}" for p in origins) + "\n")

    @property
    def grip_url(self) -> str:
        """FLEX_GRIP_URL for the web and worker processes."""
        return f"http://127.0.0.1:{self.publish_port}?key={self.key}"

    def start(self) -> Proc:
        self.proc = self.group.start("pushpin", ["pushpin", "--config", str(self.config), "--merge-output"])
        wait_for_port(self.port, proc=self.proc)
        wait_for_port(self.publish_port, proc=self.proc)
        return self.proc

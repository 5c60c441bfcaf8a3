"""A private production-profile stack for fault injection: its own PostgreSQL cluster (initdb +
pg_ctl in a temp dir, on a free port), its own redis-server (free port), the fake Google upstream,
gunicorn and qcluster started the way platform/Procfile runs them. Only processes started here are
ever stopped or killed; the shared PostgreSQL and Redis of the machine are never touched.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TENANTS = ("alpha", "beta", "bystander")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None
    )
    if not found:
        raise SystemExit(f"{name} not found: install PostgreSQL server binaries")
    return found


def _as_pg_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class ChaosStack:
    def __init__(self, workdir: Path, *, workers: int = 2, web_processes: int = 2, upstream_ms: int = 400):
        self.workdir = workdir
        self.workers, self.web_processes, self.upstream_ms = workers, web_processes, upstream_ms
        self.pg_port, self.redis_port = free_port(), free_port()
        self.web_port, self.fake_port, self.fake2_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.keys: dict[str, str] = {}
        self.pgdata = workdir / "pgdata"
        self.env = self._env()

    # --- environment ---------------------------------------------------------------------
    def _env(self) -> dict:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DEBUG"))
        }
        env.update(
            {
                "DEBUG": "0",
                "SECRET_KEY": "chaos-" + "x" * 60,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "SECURE_SSL_REDIRECT": "0",
                "SESSION_COOKIE_SECURE": "0",
                "CSRF_COOKIE_SECURE": "0",
                "SECURE_HSTS_SECONDS": "0",
                "IMAGEGATE_VAR_DIR": str(self.workdir / "var"),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.web_port}",
                "GEMINI_API_KEY": "chaos-upstream-key",
                "GEMINI_API_BASE": f"http://127.0.0.1:{self.fake_port}",
                "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/imagegate",
                "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "LOG_LEVEL": "WARNING",
                "WEB_ACCESS_LOG": "0",
                "WEB_CONCURRENCY": str(self.web_processes),
                "WEB_THREADS": "48",
                "Q_WORKERS": str(self.workers),
                # Short leases so a killed worker's jobs are re-run well within the 60 s target.
                "GENERATION_LEASE_SECONDS": "12",
                "GENERATION_REAPER_INTERVAL_SECONDS": "2",
                "GENERATION_REENQUEUE_AFTER_SECONDS": "5",
                "WORKER_HEALTH_STALE_SECONDS": "20",
                "WEBHOOK_ALLOW_PRIVATE_URLS": "1",  # the slow receiver of the hostile scenario
                # The upstream scenario's second (faulty) account points at a fake on 127.0.0.1.
                "PROVIDER_BASE_URL_HOSTS": "generativelanguage.googleapis.com,127.0.0.1",
            }
        )
        return env

    def manage(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *argv], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    # --- PostgreSQL ----------------------------------------------------------------------
    def pg_init(self) -> None:
        if os.geteuid() == 0:
            self.pgdata.mkdir(mode=0o700)
            shutil.chown(self.pgdata, "postgres", "postgres")
            os.chmod(self.workdir, 0o777)  # noqa: S103 - a throwaway dir the postgres user must enter
        subprocess.run(
            _as_pg_user(
                [_pg_bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        self.pg_start()
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "imagegate"],
            check=True,
        )

    def pg_start(self) -> None:
        options = (
            f"-p {self.pg_port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-o",
                    options,
                    "-l",
                    str(self.workdir / "pg.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def pg_stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    # --- Redis ---------------------------------------------------------------------------
    def redis_start(self) -> None:
        self.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        deadline = time.monotonic() + 10
        while not reachable(self.redis_port):
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)

    def redis_stop(self) -> None:
        proc = self.procs.pop("redis", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    # --- the app -------------------------------------------------------------------------
    def prepare(self, snapshot: Path | None = None) -> None:
        """Migrate and create the tenants. With `snapshot` (the run's first scenario writes it: a
        pg_dump of the prepared database and the tenants' keys) later scenarios restore that
        instead, which saves each of them the migrations and four Django start-ups."""
        client = ["-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres"]
        if snapshot is not None and snapshot.exists():
            subprocess.run(
                [_pg_bin("pg_restore"), *client, "-d", "imagegate", "--no-owner", str(snapshot)],
                check=True,
                capture_output=True,
            )
            self.keys = json.loads(snapshot.with_suffix(".keys").read_text())
            return
        self._prepare()
        if snapshot is not None:
            subprocess.run(
                [_pg_bin("pg_dump"), *client, "-Fc", "-f", str(snapshot), "imagegate"],
                check=True,
                capture_output=True,
            )
            snapshot.with_suffix(".keys").write_text(json.dumps(self.keys))

    def _prepare(self) -> None:
        self.manage("migrate", "--noinput")
        self.manage("createcachetable")
        for name in TENANTS:
            out = self.manage(
                "createtenant",
                "--name",
                name,
                "--owner-email",
                f"{name}@example.com",
                "--plan",
                "pro",
                "--key-mode",
                "live",
            )
            self.keys[name] = re.search(r"(ig_live_\w+)", out).group(1)
        self.manage(
            "shell",
            "-c",
            "from tenants.models import Organization; from generation.models import ProviderAccount;"
            "Organization.objects.update(requests_per_minute_override=100000,"
            " max_concurrent_jobs_override=64, monthly_images_override=1000000);"
            "ProviderAccount.objects.filter(name='gemini-api').update(max_concurrency=256)",
        )

    def fake_upstream(self, name: str, port: int, *extra: str) -> None:
        self.start(
            name,
            [
                PYTHON,
                "-m",
                "fakes.upstream",
                "--port",
                str(port),
                "--latency-ms",
                str(self.upstream_ms),
                "--jitter-ms",
                str(self.upstream_ms // 4),
                "--api-key",
                "chaos-upstream-key",
                *extra,
            ],
        )

    def up(self) -> None:
        self.fake_upstream("fake_upstream", self.fake_port)
        self.web_start()
        self.start("worker", [PYTHON, "manage.py", "qcluster"])
        self.wait_port(self.web_port)
        self.wait_port(self.fake_port)
        self._check_web_is_ours()
        deadline = time.monotonic() + 60
        while len(self.worker_children()) < self.workers + 2:
            if time.monotonic() > deadline:
                raise SystemExit("qcluster did not come up; see " + str(self.workdir / "worker.log"))
            time.sleep(0.2)

    def _check_web_is_ours(self) -> None:
        import json
        import urllib.request

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.procs["web"].poll() is not None:
                raise SystemExit(f"gunicorn exited (port {self.web_port} taken?); logs in {self.workdir}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/livez", timeout=2) as response:
                    if json.loads(response.read()) == {"status": "ok"}:
                        time.sleep(1)
                        if self.procs["web"].poll() is None:
                            return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise SystemExit(f"the web process does not answer /livez; logs in {self.workdir}")

    def web_start(self) -> None:
        self.start(
            "web",
            [
                str(Path(PYTHON).parent / "gunicorn"),
                "config.wsgi",
                "--config",
                "platform/gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.web_port}",
            ],
        )

    def wait_port(self, port: int, timeout: float = 60) -> None:
        """Wait until one of *our* processes listens there (a free port can be taken by someone
        else between choosing and binding it: then the stack fails loudly, never talks to them)."""
        deadline = time.monotonic() + timeout
        while not reachable(port) or any(proc.poll() is not None for proc in self.procs.values()):
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                raise SystemExit(f"{', '.join(dead)} exited; logs in {self.workdir}")
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on {port}; logs in {self.workdir}")
            time.sleep(0.1)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each of our process groups (each was started in
        a session of its own), and by the whole machine (every core, every process)."""
        tick = os.sysconf("SC_CLK_TCK")
        groups = {proc.pid: name for name, proc in self.procs.items()}
        used = dict.fromkeys(groups.values(), 0.0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = groups.get(int(fields[3])) or groups.get(int(fields[2]))  # session, else group
            if name is not None:
                used[name] += (int(fields[11]) + int(fields[12])) / tick
        with open("/proc/stat") as stat:
            cpu = stat.readline().split()[1:]
        used["machine"] = (sum(int(v) for v in cpu) - int(cpu[3]) - int(cpu[4])) / tick
        return used

    # --- the worker tree: qcluster (main) -> sentinel -> workers..., monitor, pusher --------
    def sentinel(self) -> int | None:
        kids = children(self.procs["worker"].pid)
        return kids[0] if kids else None

    def worker_children(self) -> list[int]:
        sentinel = self.sentinel()
        return [pid for pid in children(sentinel) if alive(pid)] if sentinel else []

    def web_workers(self) -> list[int]:
        return [pid for pid in children(self.procs["web"].pid) if alive(pid)]

    def down(self) -> None:
        """Stop every process group started here. The group, not only its leader: after the kill
        scenario a qcluster worker can outlive its sentinel and the main process (reparented to
        init, still in our session's group), and it would keep running after the run."""
        groups = {name: proc for name, proc in self.procs.items() if name != "redis"}
        for proc in groups.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in groups.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # whatever of the group is still there
                os.killpg(proc.pid, signal.SIGKILL)
        self.redis_stop()
        self.pg_stop("immediate")

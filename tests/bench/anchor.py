"""`make bench-anchor`: the LiteLLM proxy beside Imagegate, on the same fake upstream, in the same run.

`tests/bench/run.py --anchor` calls `measure()` after its own phases: this module starts LiteLLM's
proxy (its own venv, var/anchor-venv, never the project's .venv) with 2 workers and no database,
mapping an OpenAI-style `images/generations` model onto `gemini/<image model>` with `api_base` on
the bench's fake upstream (`:generateContent`), and measures it with run.py's own client and
helpers (`one_client_phase`, `load_phase`, `PhaseSampler`, `Meter.per_image`): added p50/p99 and
CPU per request at 1 client with the fake answering at once, n=4, then images/s, latency and CPU
per image at 128 clients with the upstream at 1.5 s, and peak memory. CPU is LiteLLM's whole
process tree (uvicorn's parent, both workers, multiprocessing's resource tracker), read from /proc
as run.py reads ours; LiteLLM has no PostgreSQL or Redis in this setup, ours are counted in ours.

Before measuring, a first start of the proxy runs under `strace -f -e trace=connect` while the
official OpenAI SDK asks it for one image and for four: the image must decode as a PNG (Pillow)
of the size the fake renders, and every connect() of its processes must go to 127.0.0.1 (the
telemetry / cost-map / tokenizer downloads are switched off by the environment below). The proxy
is then started afresh, without the tracer, for the figures.

Install (what `make bench-anchor` runs when the venv is missing): `python tests/bench/anchor.py
install`. LiteLLM 1.109.3's `[proxy]` extra pins companion packages (`litellm-proxy-extras`,
`litellm-enterprise`) at versions the package index here lacks, so `litellm==1.109.3` is installed
without the extra and then the extra's own requirement list, read from the installed metadata,
with any exact pin that the index cannot satisfy replaced by the newest version it has.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.run import (  # noqa: E402 - the path above makes `tests` importable as a script
    UPSTREAM,
    Meter,
    PhaseSampler,
    Stack,
    cpu_seconds,
    free_port,
    load_phase,
    one_client_phase,
    process_tree,
    sequential,
    set_fake_latency,
)

VENV = ROOT / "var" / "anchor-venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".anchor-installed"
LITELLM_VERSION = "1.109.3"
MODEL_NAME = "gemini-image"  # what clients ask LiteLLM for
# The model run.py's baseline calls straight at the fake.
UPSTREAM_MODEL = UPSTREAM["path"].split("/models/", 1)[1].split(":", 1)[0]
MASTER_KEY = "sk-anchor-bench"
PNG_B64 = b'"b64_json":"iVBORw0KGgo'  # a base64 PNG signature right after the key: an image, not null

# Nothing leaves 127.0.0.1: no model cost map, blog posts, beta headers, policy templates, tokenizers
# or presets fetched by LiteLLM itself (all honour LITELLM_OFFLINE_MODE in 1.109.3), no Hugging Face
# or tiktoken downloads, no telemetry. The strace check below verifies it.
OFFLINE_ENV = {
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}

LITELLM_PATH = {
    "path": "/v1/images/generations",
    "body": lambda prompt, n: {"model": MODEL_NAME, "prompt": prompt, "n": n},
    "ok": PNG_B64,
}


# --- the venv -------------------------------------------------------------------------------
def installed() -> bool:
    return STAMP.exists() and VENV_PYTHON.exists()


def _pip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


PROXY_REQUIREMENTS = """
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires("litellm"):
    req = Requirement(line)
    if req.marker and req.marker.evaluate({"extra": "proxy"}) and not req.marker.evaluate({"extra": ""}):
        req.marker = None
        print(req)
"""


def install() -> None:
    """The anchor venv: litellm without its extra, then the `[proxy]` extra's requirements."""
    if installed():
        print(f"anchor venv ready: {VENV}")
        return
    python = shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
    done = _pip(f"litellm=={LITELLM_VERSION}")
    if done.returncode:
        raise SystemExit(f"pip install litellm=={LITELLM_VERSION} failed:\n{done.stderr}")
    listed = subprocess.run(
        [str(VENV_PYTHON), "-c", PROXY_REQUIREMENTS], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    requirements = [line.strip() for line in listed if line.strip()]
    for _ in range(len(requirements)):
        done = _pip(*requirements)
        if done.returncode == 0:
            break
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)==", done.stderr)
        if not missing:
            raise SystemExit(f"pip install of LiteLLM's [proxy] requirements failed:\n{done.stderr}")
        name = missing.group(1)
        print(f"  the index lacks the pinned {name}; taking the newest it has")
        requirements = [name if re.match(rf"{re.escape(name)}\s*==", r) else r for r in requirements]
    else:
        raise SystemExit("could not install LiteLLM's [proxy] requirements")
    versions = subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = {
        "litellm",
        "litellm-proxy-extras",
        "litellm-enterprise",
        "uvicorn",
        "uvloop",
        "fastapi",
        "httpx",
    }
    picked = {p["name"]: p["version"] for p in json.loads(versions) if p["name"].lower() in wanted}
    STAMP.write_text(json.dumps(picked, indent=2))
    print(f"anchor venv installed in {VENV}: {picked}")


def versions() -> dict:
    return json.loads(STAMP.read_text()) if installed() else {}


# --- the proxy ------------------------------------------------------------------------------
class Proxy(Stack):
    """LiteLLM's proxy as a one-service "stack": `web_port` is its port, so run.py's phases drive
    it with the same client; `procs["litellm"]` is the uvicorn parent (own session: PGID = PID)."""

    def __init__(self, stack: Stack, workdir: Path):  # not Stack's: nothing of ours runs here
        self.args, self.workdir = stack.args, workdir
        self.fake_port, self.web_port = stack.fake_port, free_port()
        self.fake_pid = stack.procs["fake_upstream"].pid
        self.procs: dict[str, subprocess.Popen] = {}
        self.config = workdir / "litellm-config.yaml"
        self.log_config = workdir / "litellm-log-config.json"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DATABASE_URL", "REDIS_", "VIRTUAL_ENV"))
            },
            **OFFLINE_ENV,
            "LITELLM_LOG": "WARNING",  # like ours (LOG_LEVEL=WARNING): no INFO lines per request
            "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        }
        self._write_config()

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed on our side. No database_url: LiteLLM runs without one.
        config = {
            "model_list": [
                {
                    "model_name": MODEL_NAME,
                    "litellm_params": {
                        "model": f"gemini/{UPSTREAM_MODEL}",
                        "api_base": f"http://127.0.0.1:{self.fake_port}/v1beta",
                        "api_key": "bench-upstream-key",
                    },
                    "model_info": {"mode": "image_generation"},
                }
            ],
            "general_settings": {"master_key": MASTER_KEY},
            "litellm_settings": {"drop_params": False},
        }
        self.config.write_text(json.dumps(config, indent=2))
        # Like ours (WEB_ACCESS_LOG=0, LOG_LEVEL=WARNING): no access log line per request.
        log_config = {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "loggers": {
                "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "uvicorn.error": {"level": "INFO"},
                "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            },
        }
        self.log_config.write_text(json.dumps(log_config))

    def argv(self) -> list[str]:
        return [
            str(VENV / "bin" / "litellm"),
            "--config",
            str(self.config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.web_port),
            "--num_workers",
            "2",
            "--log_config",
            str(self.log_config),
        ]

    def up(self, name: str = "litellm", tracer: list[str] | None = None) -> None:
        self.start(name, [*(tracer or []), *self.argv()])
        deadline = time.monotonic() + 180  # its import and startup take ~30 s of a busy core
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise SystemExit(f"LiteLLM exited at startup; see {self.workdir / (name + '.log')}")
            if self._ready(name):
                return
            time.sleep(0.5)
        raise SystemExit(f"LiteLLM did not come up; see {self.workdir / (name + '.log')}")

    def _ready(self, name: str) -> bool:
        """Both workers have started (uvicorn logs each one's startup) and the liveliness probe answers."""
        import http.client

        log = (self.workdir / f"{name}.log").read_text(errors="replace")
        if log.count("Application startup complete.") < 2:
            return False
        for _ in range(6):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=2)
                conn.request("GET", "/health/liveliness")
                if conn.getresponse().status != 200:
                    return False
                conn.close()
            except OSError:
                return False
        return True

    def ours(self) -> list[int]:
        return process_tree([p.pid for p in self.procs.values()])

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


class ProxyMeter(Meter):
    """LiteLLM's process tree (its whole CPU: there is no database or Redis behind it) and the fake."""

    def __init__(self, proxy: Proxy):  # no ServiceCpu: no PostgreSQL/Redis
        self.proxy = proxy

    def read(self) -> dict[str, float]:
        return {
            "litellm": cpu_seconds(self.proxy.ours()),
            "fake_upstream": cpu_seconds(process_tree([self.proxy.fake_pid])),
        }


class UpstreamConnections(threading.Thread):
    """How many connections LiteLLM's processes hold open to the fake, once a second (`ss`): with
    HTTP/1.1 each upstream call in flight needs its own, so the peak is its upstream concurrency."""

    def __init__(self, proxy: Proxy):
        super().__init__(daemon=True)
        self.proxy, self.stop_flag = proxy, threading.Event()
        self.counts: list[int] = []
        self.peak_by_process: dict[int, int] = {}

    def run(self) -> None:
        ss = shutil.which("ss")
        while ss and not self.stop_flag.wait(1.0):
            pids = set(self.proxy.ours())
            argv = [ss, "-Htnp", "state", "established", f"dport = :{self.proxy.fake_port}"]
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
            owners = [int(pid) for pid in re.findall(r"pid=(\d+),", out)]
            per_process = {pid: owners.count(pid) for pid in pids if pid in owners}
            self.counts.append(sum(per_process.values()))
            for pid, n in per_process.items():
                self.peak_by_process[pid] = max(n, self.peak_by_process.get(pid, 0))

    def summary(self) -> dict:
        self.stop_flag.set()
        self.join(3)
        counts = sorted(self.counts)
        if not counts:
            return {}
        return {"max": counts[-1], "median": counts[len(counts) // 2], "max_by_process": self.peak_by_process}


# --- the honesty checks: a real image through the OpenAI SDK, nothing beyond 127.0.0.1 --------
def sdk_check(proxy: Proxy) -> dict:
    """The official OpenAI SDK (the project's dev dependency) asks LiteLLM for 1 image, then for 4."""
    from openai import OpenAI, OpenAIError
    from PIL import Image

    client = OpenAI(base_url=f"http://127.0.0.1:{proxy.web_port}/v1", api_key=MASTER_KEY, max_retries=0)
    out: dict = {}
    answer = client.images.generate(model=MODEL_NAME, prompt="anchor sdk check", n=1)
    data = answer.data or []
    raw = base64.b64decode(data[0].b64_json or "") if data else b""
    image = Image.open(io.BytesIO(raw))
    image.load()  # decodes every pixel: a truncated or fake payload raises here
    out["n1"] = {"images": len(data), "format": image.format, "size": list(image.size), "bytes": len(raw)}
    try:
        four = client.images.generate(model=MODEL_NAME, prompt="anchor sdk check n4", n=4)
        out["n4"] = {"images": len(four.data or []), "error": None}
    except OpenAIError as exc:  # the upstream's own message, when LiteLLM passes it on
        said = re.search(r'"message": "([^"]+)"', str(exc))
        status = getattr(exc, "status_code", "?")
        out["n4"] = {"images": 0, "error": f"HTTP {status}: {said.group(1) if said else str(exc)[:200]}"}
    return out


_FAMILY = re.compile(r"connect\(\d+, \{sa_family=(\w+)")
_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"|sun_path=(?:@)?"([^"]*)"')
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")


def connects(trace_dir: Path) -> dict:
    """Every connect() in the strace output: internet ones off 127.0.0.1/::1 are what must not exist."""
    seen: dict[str, int] = {}
    outside: list[str] = []
    for path in trace_dir.glob("trace*"):
        for line in path.read_text(errors="replace").splitlines():
            family = _FAMILY.search(line)
            if not family:
                continue
            address, port = _ADDRESS.search(line), _PORT.search(line)
            addr = next((g for g in address.groups() if g is not None), "") if address else ""
            target = f"{family.group(1)} {addr}" + (f":{port.group(1)}" if port else "")
            seen[target] = seen.get(target, 0) + 1
            if family.group(1) in ("AF_INET", "AF_INET6"):
                try:
                    if not ipaddress.ip_address(addr).is_loopback:
                        outside.append(target)
                except ValueError:
                    outside.append(target)
    return {"targets": seen, "outside_loopback": sorted(set(outside))}


def verified_start(proxy: Proxy) -> dict:
    """The first start, traced: SDK check and the connect() audit, then the proxy is stopped."""
    strace = shutil.which("strace")
    trace_dir = proxy.workdir / "litellm-strace"
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir()
    tracer = (
        [strace, "-f", "-qq", "-e", "trace=connect", "-ff", "-o", str(trace_dir / "trace")]
        if strace
        else None
    )
    started = time.monotonic()
    proxy.up("litellm_traced", tracer)
    startup_s = round(time.monotonic() - started, 1)
    try:
        set_fake_latency(proxy.fake_port, 0)
        checks: dict = {"startup_seconds_traced": startup_s, "sdk": sdk_check(proxy)}
        time.sleep(5)  # let anything it would do in the background after startup happen under the tracer
    finally:
        proxy.down()
    checks["network"] = (
        connects(trace_dir) if strace else {"targets": {}, "outside_loopback": ["strace missing"]}
    )
    log = (proxy.workdir / "litellm_traced.log").read_text(errors="replace")
    checks["access_log_lines"] = log.count("POST /v1/images/generations")
    return checks


# --- the measurement --------------------------------------------------------------------------
def measure(stack: Stack, args, result: dict) -> dict:
    """LiteLLM's phases, in the order and with the sizes of ours; returns result["litellm"]."""
    workdir = stack.workdir
    baseline_ms = result["upstream_only"]["one_client_p50_ms"]
    proxy = Proxy(stack, workdir)
    out: dict = {"versions": versions(), "load_average_at_start": os.getloadavg()}
    out["checks"] = verified_start(proxy)
    print(f"  litellm checks : {out['checks']}", flush=True)
    meter, sampler = ProxyMeter(proxy), None
    try:
        started = time.monotonic()
        proxy.up()
        out["startup_seconds"] = round(time.monotonic() - started, 1)
        sampler = PhaseSampler([proxy.procs["litellm"].pid])
        sampler.start()
        set_fake_latency(stack.fake_port, 0)
        asyncio.run(sequential(proxy.web_port, LITELLM_PATH, MASTER_KEY, 5))  # warm-up, as ours
        idle0 = meter.read()
        time.sleep(args.idle_seconds)
        idle1 = meter.read()
        out["idle_cpu_ms_per_s"] = round((idle1["litellm"] - idle0["litellm"]) * 1000 / args.idle_seconds, 1)
        one = one_client_phase(proxy, meter, LITELLM_PATH, MASTER_KEY, args.one_client_requests, baseline_ms)
        out["one_client"] = one
        print(f"  litellm 1 client: {one}", flush=True)
        if args.n4_requests:
            n4 = one_client_phase(proxy, meter, LITELLM_PATH, MASTER_KEY, args.n4_requests, baseline_ms, n=4)
            out["one_client_n4"] = n4
            print(f"  litellm n=4     : {n4}", flush=True)
        set_fake_latency(stack.fake_port, args.upstream_ms)
        connections = UpstreamConnections(proxy)
        connections.start()
        load = load_phase(
            proxy, meter, sampler, LITELLM_PATH, MASTER_KEY, args.clients, args.throughput_seconds
        )
        load["upstream_connections"] = connections.summary()
        out["load"] = load
        print(f"  litellm load    : {load}", flush=True)
    finally:
        if sampler:
            sampler.stop_flag.set()
        proxy.down()
    out["load_average_at_end"] = os.getloadavg()
    return out


# --- the report -------------------------------------------------------------------------------
def _ratio(ours: float, theirs: float) -> str:
    if theirs in (0, None) or ours is None or ours != ours or theirs != theirs:  # NaN-safe
        return "-"
    return f"{ours / theirs:.2f}x"


def report_lines(result: dict, args) -> list[str]:
    lit = result["litellm"]
    paths = result["paths"]
    ours = [name for name in ("native", "openai") if name in paths]

    def row(label: str, get, unit: str = "") -> str:
        theirs = get(lit)
        values = [get(paths[name]) for name in ours]
        cells = [f"{theirs}{unit}".rjust(12)] + [f"{v}{unit}".rjust(12) for v in values]
        cells += [_ratio(v, theirs).rjust(16) for v in values]
        return f"  {label:44}" + "".join(cells)

    versions_ = lit.get("versions", {})
    checks = lit["checks"]
    sdk, net = checks["sdk"], checks["network"]
    lines = [
        f"LiteLLM {versions_.get('litellm', '?')} proxy"
        f" (litellm-proxy-extras {versions_.get('litellm-proxy-extras', '?')},"
        f" uvicorn 2 workers, no database, no Redis) on the same fake upstream,"
        f" model gemini/{UPSTREAM_MODEL} via :generateContent; its CPU = its whole process tree"
        " (ours includes PostgreSQL + Redis; LiteLLM has neither in this setup)",
        f"  OpenAI SDK through LiteLLM: n=1 -> {sdk['n1']['images']} image, {sdk['n1']['format']}"
        f" {sdk['n1']['size'][0]}x{sdk['n1']['size'][1]} ({sdk['n1']['bytes']} bytes, decoded);"
        f" n=4 -> {sdk['n4']['images']} images" + (f" ({sdk['n4']['error']})" if sdk["n4"]["error"] else ""),
        f"  network (strace connect() of every LiteLLM process, startup + SDK calls): outside 127.0.0.1:"
        f" {net['outside_loopback'] or 'none'}; targets {net['targets']}",
        "",
        f"  {'':44}"
        + "LiteLLM".rjust(12)
        + "".join(n.rjust(12) for n in ours)
        + "".join(f"{n}/LiteLLM".rjust(16) for n in ours),
        row("added p50, 1 client, upstream 0 ms (ms)", lambda d: d["one_client"]["added_ms_p50"]),
        row("added p99, 1 client (ms)", lambda d: d["one_client"]["added_ms_p99"]),
        row(
            "CPU per 1-image request, 1 client (ms)",
            lambda d: d["one_client"]["cpu_ms_per_request"]["total_ours"],
        ),
        row(
            f"images/s, {args.clients} clients, upstream {args.upstream_ms:.0f} ms",
            lambda d: d["load"]["images_per_s"],
        ),
        row("CPU per image at that load (ms)", lambda d: d["load"]["cpu_ms_per_image"]["total_ours"]),
        row("p50 latency at that load (ms)", lambda d: d["load"]["latency_ms_p50"]),
        row("p99 latency at that load (ms)", lambda d: d["load"]["latency_ms_p99"]),
        row("peak RSS at that load (MB)", lambda d: d["load"]["peak_rss_mb"]),
        row("peak PSS at that load (MB)", lambda d: d["load"]["peak_pss_mb"]),
        f"  {'errors at that load':44}"
        + f"{lit['load']['errors'] or 'none'}".rjust(12)
        + "".join(f"{paths[n]['load']['errors'] or 'none'}".rjust(12) for n in ours),
    ]
    up = result["upstream_only"]
    in_flight = round(lit["load"]["images_per_s"] * args.upstream_ms / 1000, 1)
    conns = lit["load"].get("upstream_connections") or {}
    lines.append(
        f"  upstream alone: {up['images_per_s']} images/s at {args.clients} clients; LiteLLM's connections"
        f" to it under load: max {conns.get('max', '?')}, median {conns.get('median', '?')},"
        f" max per worker {sorted((conns.get('max_by_process') or {}).values())}"
        f" (images/s x upstream seconds = {in_flight} calls in flight)"
    )
    lines.append(
        f"  LiteLLM idle CPU {lit['idle_cpu_ms_per_s']} ms/s; startup {lit['startup_seconds']} s;"
        f" at that load {lit['load']['succeeded']}/{lit['load']['requests']} ok"
    )
    start, end = lit["load_average_at_start"], lit["load_average_at_end"]
    lines.append(
        f"  load average (1/5/15 min) when LiteLLM's phases began {'/'.join(f'{x:.1f}' for x in start)},"
        f" when they ended {'/'.join(f'{x:.1f}' for x in end)}"
    )
    if "one_client_n4" in lit:
        n4 = lit["one_client_n4"]
        lines.append(
            f"  n=4 at 1 client: LiteLLM {n4['succeeded']}/{n4['requests']} succeeded"
            f" (statuses {n4['errors'] or {'200': n4['succeeded']}}; it forwards n as candidateCount)"
        )
    lines.append("  ratios are Imagegate / LiteLLM: below 1 is better, except images/s (above 1 is better)")
    return lines


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        install()
    else:
        raise SystemExit("usage: python tests/bench/anchor.py install   (the measurement: run.py --anchor)")

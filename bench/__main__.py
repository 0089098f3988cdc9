"""`python -m bench` (or `make bench`): every benchmark, on SQLite and on
PostgreSQL, with a private Redis. Prints the figures and how they compare
with this round's targets. Nothing here is a test: no figure fails the run.

Environment: FLEX_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/flex_bench;
the database is dropped and re-created), FLEX_BENCH_DIR (default /tmp/flex_bench),
FLEX_BENCH_CLIENTS (default 500), FLEX_BENCH_AGENTS (long-polling agents, default 200),
FLEX_BENCH_ONLY (sqlite or postgresql), FLEX_BENCH_PHASES (a comma-separated subset of
engine, throughput, llm, sse, agents, sse_polling, pushpin; default all), FLEX_BENCH_LLM_RUNS (default 20), FLEX_BENCH_LLM_DELAY_MS (the
test model's latency, default 50), FLEX_BENCH_PUSHPIN_CLIENTS (clients through Pushpin in front of
two daphnes, default 5000; the phase is skipped without Debian's pushpin).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse, urlunparse

from bench import capabilities
from bench.common import RESULT_PREFIX, ROOT, WORK, free_port, wait_port

PG_URL = os.environ.get("FLEX_BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/flex_bench")
CLIENTS = int(os.environ.get("FLEX_BENCH_CLIENTS", "500"))
AGENTS = int(os.environ.get("FLEX_BENCH_AGENTS", "200"))
PUSHPIN_CLIENTS = int(os.environ.get("FLEX_BENCH_PUSHPIN_CLIENTS", "5000"))
ALL_PHASES = ("engine", "throughput", "llm", "sse", "agents", "sse_polling", "pushpin")
PHASES = [p.strip() for p in os.environ.get("FLEX_BENCH_PHASES", ",".join(ALL_PHASES)).split(",") if p.strip()]
# Engine targets are ratios to the floor measured in the same run (bench/floor.py).
TARGETS = {"marginal_ratio": 2.0, "run3_ratio": 10.0, "approval_ratio": 15.0, "growth": 0.15,
           "commits_per_node": 1.0, "sse_p50_ms": 10.0, "sse_p99_ms": 50.0, "pushpin_p99_ms": 2000.0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def base_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "flexagents.settings", "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": env.get("SECRET_KEY", "flex-bench"), "LOG_LEVEL": "WARNING", "FLEX_EMBEDDED_WORKERS": "0",
        "FLEX_IDLE_POLL_SECONDS": "0.05", "FLEX_FACET_CATALOG": str(WORK / "facets.json"),
        "FLEX_EXTRA_CAPABILITIES": ",".join(capabilities.PATHS), "PYTHONPATH": str(ROOT),
    })
    return env


def prepare_sqlite() -> str | None:
    path = WORK / "bench.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        if p.exists():
            p.unlink()
    return f"sqlite:///{path}"


def prepare_postgres() -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    parsed = urlparse(PG_URL)
    name = parsed.path.lstrip("/") or "flex_bench"
    admin = urlunparse(parsed._replace(path="/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001
        log(f"PostgreSQL unavailable ({exc}); skipping it")
        return None
    return PG_URL


def phase(module: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    log(f"  … {module} {' '.join(args)}")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            log(f"    done in {time.monotonic() - started:.1f}s")
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{module} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "PrivateRedis":
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes"], check=True, capture_output=True)
        wait_port(self.port)
        return self

    def __exit__(self, *exc: Any) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)


def bench_database(vendor: str, url: str) -> dict[str, Any]:
    env = base_env(url)
    log(f"[{vendor}] migrating")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    out: dict[str, Any] = {}
    for name, module in (("engine", "bench.engine"), ("throughput", "bench.throughput"), ("llm", "bench.llm")):
        if name in PHASES:
            out[name] = phase(module, env)
    if shutil.which("redis-server"):
        if "sse" in PHASES:
            with PrivateRedis() as redis:
                out["sse_redis"] = phase("bench.sse", {**env, "REDIS_URL": redis.url}, str(CLIENTS))
        if "agents" in PHASES:
            with PrivateRedis() as redis:
                out["agents"] = phase("bench.agents", {**env, "REDIS_URL": redis.url}, str(AGENTS))
    elif "agents" in PHASES:
        # Without Redis a waiting claim learns of new tasks by polling (FLEX_TASK_POLL_SECONDS).
        out["agents"] = phase("bench.agents", env, str(AGENTS))
    if "sse_polling" in PHASES:
        # Without Redis: streams learn of new events by polling (FLEX_SSE_POLL_SECONDS, 0.25 s default).
        out["sse_polling"] = phase("bench.sse", env, "0", "4")
    if "pushpin" in PHASES:
        # Pushpin holds the streams; the worker publishes to it (Redis is not on that path).
        out["pushpin"] = phase("bench.sse_pushpin", env, str(PUSHPIN_CLIENTS))
    return out


def verdict(value: float, target: float) -> str:
    # 2 % slack: "one commit per node" measured over many nodes is 1.003.
    return f"{'OK ' if value <= target * 1.02 else 'MISS'} (target ≤ {target:g})"


def report(results: dict[str, dict[str, Any]]) -> None:
    print("\n=== Flex Agents benchmark ===")
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average {LOAD_AT_START} at start,"
          f" {_loadavg()} at the end\n")
    for vendor, r in results.items():
        print(f"--- {vendor}")
        if "engine" in r:
            e = r["engine"]
            m = e["summary"]

            def fig(key: str, unit: str = "ms") -> str:
                v = m[key]
                return f"{v['median']:.2f} {unit} [{v['min']:.2f}–{v['max']:.2f}]"

            print(f"engine: medians of {len(e['rounds'])} interleaved rounds [min–max]")
            print(f"floor, one transaction of 3 small writes: {fig('floor_ms')} on the driver;"
                  f" {fig('floor_django_ms')} through Django")
            rows = (("marginal cost of one node step", "marginal_ms_per_node", "marginal_ratio"),
                    ("3-node run end to end", "run3_ms", "run3_ratio"),
                    ("approval pause + resume (3 nodes, ask after node 2)", "approval_ms", "approval_ratio"))
            for label, key, ratio in rows:
                v = m[ratio]
                line = f"{label}: {fig(key)} = {v['median']:.2f}× floor [{v['min']:.2f}–{v['max']:.2f}]"
                if vendor == "postgresql":
                    line += "  " + verdict(v["median"], TARGETS[ratio])
                print(line)
            print(f"  statements: {m['marginal_statements_per_node']['median']:.2f} per node step,"
                  f" {m['approval_statements']['median']:.1f} per approval run")
            print(f"  commits per node step (marginal): {m['marginal_commits_per_node']['median']:.3f}  "
                  f"{verdict(m['marginal_commits_per_node']['median'], TARGETS['commits_per_node'])}")
            g = e["growth"]
            print(f"growth, {g['nodes']}-node run of {g['pad_bytes'] / 1000:g} KB nodes: step 1–5 {g['first_ms']:.2f} ms,"
                  f" step {g['nodes'] - 5}–{g['nodes'] - 1} {g['last_ms']:.2f} ms ({g['ms_growth']:+.0%})"
                  f"  {verdict(max(g['ms_growth'], 0.0), TARGETS['growth']) if vendor == 'postgresql' else ''}")
            print(f"  CPU time of the worker per step {g['first_cpu_ms']:.2f} ms -> {g['last_cpu_ms']:.2f} ms"
                  f" ({g['cpu_growth']:+.0%})")
            print(f"  bytes sent per step {g['first_bytes'] / 1000:.1f} KB -> {g['last_bytes'] / 1000:.1f} KB"
                  f" ({g['bytes_growth']:+.0%}), {g['total_bytes_per_run'] / 1e6:.2f} MB per run,"
                  f" {g['commits_per_step']:.2f} commits per step (floor then {g['floor_ms']:.2f} ms)")
        if "throughput" in r:
            for label, t in (("", r["throughput"]["throughput"]),
                             (f", {r['throughput']['in_flight']['runs']} runs in flight",
                              r["throughput"]["in_flight"]["throughput"])):
                base = t["1"]["runs_per_second"]
                print(f"runs/sec (3-node runs{label}): " + ", ".join(
                    f"{n} worker{'s' if n != '1' else ''}: {v['runs_per_second']:.1f} (x{v['runs_per_second'] / base:.2f})"
                    for n, v in t.items()))
        if "sse_redis" in r:
            s = r["sse_redis"]
            lat = s["latency"]
            print(f"SSE commit->receive with Redis: p50 {lat['p50_ms']:.1f} ms {verdict(lat['p50_ms'], TARGETS['sse_p50_ms'])},"
                  f" p99 {lat['p99_ms']:.1f} ms {verdict(lat['p99_ms'], TARGETS['sse_p99_ms'])} ({lat['frames']} frames)")
            m = s.get("many")
            if m:
                print(f"{m['clients']} SSE clients on one daphne: {m['complete_deliveries']}/{m['clients']} complete,"
                      f" p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms, opened in {m['seconds_to_open']:.1f}s")
                for label in ("baseline", "connect_peak", "open_idle", "delivery_peak", "after"):
                    v = m[label]
                    print(f"  {label:>13}: threads {v['threads']}, db connections {v['db']}, RSS {v['rss_mb']:.0f} MB")
        if "agents" in r:
            a = r["agents"]
            lat = a["claim_latency"]
            print(f"{a['agents']} long-polling agents on one daphne ({'Redis' if a['redis'] else 'no Redis'}):"
                  f" registered and polling in {a['seconds_to_register_and_poll']}s; {a['runs_completed']}/{a['runs']}"
                  f" runs done in {a['seconds_to_finish_runs']}s; claim latency (node_dispatched -> agent)"
                  f" p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms")
            for label in ("baseline", "connect_peak", "waiting", "dispatch_peak", "after"):
                v = a[label]
                print(f"  {label:>13}: threads {v['threads']}, db connections {v['db']}, RSS {v['rss_mb']:.0f} MB,"
                      f" fds {v['fds']}")
            w, b = a["waiting"], a["baseline"]
            print(f"  waiting vs baseline: threads x{w['threads'] / b['threads']:.2f},"
                  f" db connections {b['db']} -> {w['db']}, RSS +{w['rss_mb'] - b['rss_mb']:.0f} MB")
        if "llm" in r:
            llm = r["llm"]
            print(f"LLM nodes against the local test server (model answers in {llm['model_delay_ms']:g} ms; "
                  f"{llm['runs']} runs, {llm['ms_per_run']:.1f} ms/run), per node, medians:")
            for node, v in llm["nodes"].items():
                print(f"  {node:<19} model {v['model_ms_p50']:7.1f} ms | ours {v['overhead_ms_p50']:6.1f} ms "
                      f"(SDK+HTTP {v['sdk_http_ms_p50']:5.1f}, prompt+validate+commit {v['engine_ms_p50']:5.1f}; "
                      f"max {v['overhead_ms_max']:.1f}) = {v['overhead_ms_p50'] / v['node_ms_p50']:.0%} of the node")
        if "sse_polling" in r:
            p = r["sse_polling"]["latency"]
            print(f"SSE without Redis (polling): p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms ({p['frames']} frames)")
        if "pushpin" in r:
            p = r["pushpin"]
            if "skipped" in p:
                print(f"SSE through Pushpin: skipped ({p['skipped']})")
            else:
                print(f"{p['clients']} SSE clients through Pushpin in front of two daphnes ({p['client_processes']}"
                      f" client processes): {p['complete_deliveries']}/{p['clients']} complete,"
                      f" {p['frames']}/{p['frames_expected']} frames, opened in {p['seconds_to_open']}s;"
                      f" commit->receive p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms"
                      f" {verdict(p['p99_ms'], TARGETS['pushpin_p99_ms'])}, max {p['max_ms']:.1f} ms")
                print(f"  delivery: {p['delivery_wall_seconds']}s from release to the last client's end; CPU seconds"
                      f" spent meanwhile: " + ", ".join(f"{k} {v}" for k, v in p["delivery_cpu_seconds"].items()))
                if p.get("failed_streams") or p.get("incomplete_examples"):
                    print(f"  {p['failed_streams']} streams failed (e.g. {p['failures'][:1]}); incomplete"
                          f" (frames, last seqs): {p['incomplete_examples']}")
                for label in ("baseline", "connect_peak", "open_idle", "delivery_peak", "after"):
                    v = p[label]
                    print(f"  {label:>13}: " + "; ".join(f"{name} threads {f['threads']}, RSS {f['rss_mb']:.0f} MB"
                                                          for name, f in v.items()))
        print()


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


LOAD_AT_START = _loadavg()


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    capabilities.write_catalog(WORK / "facets.json")
    only = os.environ.get("FLEX_BENCH_ONLY")
    unknown = sorted(set(PHASES) - set(ALL_PHASES))
    if unknown:
        sys.exit(f"FLEX_BENCH_PHASES: unknown phase(s) {', '.join(unknown)}; choose from {', '.join(ALL_PHASES)}")
    results: dict[str, dict[str, Any]] = {}
    for vendor, prepare in (("sqlite", prepare_sqlite), ("postgresql", prepare_postgres)):
        if only and only != vendor:
            continue
        url = prepare()
        if url:
            results[vendor] = bench_database(vendor, url)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    report(results)
    print(f"(raw figures: {WORK / 'results.json'}; process logs in {WORK})")


if __name__ == "__main__":
    main()

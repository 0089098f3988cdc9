"""Many long-polling agents in one process (asyncio + httpx), for
`bench.agents`. No Django: it is a client, like a fleet of real agents.

    python -m bench.agent_load <port> <agent token> <agents> <capability prefix>

Registers agents `bench-agent-000` … (each serving `<prefix>000` …:
company_information -> bench_agent), heartbeats them, and keeps one claim
long poll in flight per agent. Each claimed task is completed at once.
Prints `READY` when every agent has a poll in flight, one `CLAIM {json}` line
per task (taskId, runId, agentId, receive time), and `STATS {json}` when it
gets SIGTERM.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from typing import Any

import httpx

WAIT_SECONDS = 30
HEARTBEAT_SECONDS = 60


def say(line: str) -> None:
    print(line, flush=True)


async def main(port: int, token: str, count: int, prefix: str) -> None:
    base = f"http://127.0.0.1:{port}/api/v1/flex"
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limits = httpx.Limits(max_connections=count + 50, max_keepalive_connections=count + 50)
    timeout = httpx.Timeout(WAIT_SECONDS + 30, connect=30)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=timeout) as client:
        ids = [f"bench-agent-{i:03d}" for i in range(count)]

        async def register(index: int, agent_id: str) -> None:
            body = {"agentId": agent_id, "displayName": agent_id, "heartbeatSeconds": HEARTBEAT_SECONDS,
                    "maxConcurrency": 4, "capabilities": [{
                        "capabilityId": f"{prefix}{index:03d}", "kind": "execution", "agentType": "ai",
                        "inputFacets": ["company_information"], "outputFacets": ["bench_agent"]}]}
            response = await client.post("/agents/register", json=body)
            response.raise_for_status()

        for start in range(0, count, 20):  # registrations in batches: each one bumps the catalog
            await asyncio.gather(*(register(i, ids[i]) for i in range(start, min(count, start + 20))))

        in_flight = [0]
        ready = asyncio.Event()

        async def poll(agent_id: str) -> None:
            while not stop.is_set():
                in_flight[0] += 1
                if in_flight[0] >= count:
                    ready.set()
                try:
                    response = await client.post(f"/agents/{agent_id}/tasks/claim", json={"waitSeconds": WAIT_SECONDS})
                except httpx.HTTPError as exc:
                    counts[f"error {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.5)
                    continue
                finally:
                    in_flight[0] -= 1
                counts[str(response.status_code)] += 1
                if response.status_code != 200:
                    if response.status_code != 204:
                        await asyncio.sleep(0.5)
                    continue
                received = time.time()
                task = response.json()["task"]
                say("CLAIM " + json.dumps({"taskId": task["taskId"], "runId": task["runId"], "agentId": agent_id,
                                           "at": received}))
                done = await client.post(f"/tasks/{task['taskId']}/complete", json={
                    "leaseToken": task["leaseToken"], "output": {"bench_agent": {"step": 1}}})
                counts[f"complete {done.status_code}"] += 1

        async def heartbeats() -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_SECONDS / 3)
                except asyncio.TimeoutError:
                    pass
                if not stop.is_set():
                    await asyncio.gather(*(client.post(f"/agents/{a}/heartbeat", json={}) for a in ids),
                                         return_exceptions=True)

        pollers = [asyncio.create_task(poll(agent_id)) for agent_id in ids]
        beats = asyncio.create_task(heartbeats())
        await ready.wait()
        await asyncio.sleep(0.5)  # the last requests reach the server
        say("READY")
        await stop.wait()
        for task in [*pollers, beats]:
            task.cancel()
        await asyncio.gather(*pollers, beats, return_exceptions=True)
    say("STATS " + json.dumps(dict(counts)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]))

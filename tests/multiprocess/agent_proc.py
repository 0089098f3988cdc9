"""A test agent process on the SDK (not the example: its knobs are for tests).

Run as `python tests/multiprocess/agent_proc.py` with FLEX_URL, FLEX_TOKEN and:

- AGENT_ID (default mp-hashtags), AGENT_CAPABILITY (default acme.Hashtags),
  AGENT_HEARTBEAT_SECONDS (1), AGENT_MAX_CONCURRENCY (2), AGENT_GRACE_SECONDS
  (stop grace, 20), AGENT_CLAIM_WAIT_SECONDS (5);
- AGENT_SLEEP: seconds the capability sleeps before answering (a slow agent);
- AGENT_OUTPUT: `valid` (default: the example's hashtags plus `#Pid<pid>`,
  so a test can tell which process's output was committed) or `invalid`
  (a hashtag without its `#`: the server answers 422);
- AGENT_CLARIFY: a question to ask (Clarify) until the bundle has its answer;
- AGENT_CALL_LOG: a file that gets one JSON line per call (pid, attempt,
  nodeId, runId, clarifications, at) when the function starts.

It prints `agent stats {...}` when it stops, for the tests to read.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from flexagents_sdk import Agent, Bundle, Clarify

BASE_DIR = Path(__file__).resolve().parents[2]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("example_hashtags", BASE_DIR / "examples" / "agents" / "hashtags.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = os.environ
    suggest = _example().suggest_hashtags
    sleep = float(env.get("AGENT_SLEEP", "0"))
    output_mode = env.get("AGENT_OUTPUT", "valid")
    question = env.get("AGENT_CLARIFY", "")
    call_log = env.get("AGENT_CALL_LOG", "")
    agent = Agent(env["FLEX_URL"], env["FLEX_TOKEN"], agent_id=env.get("AGENT_ID", "mp-hashtags"),
                  heartbeat_seconds=int(env.get("AGENT_HEARTBEAT_SECONDS", "1")),
                  max_concurrency=int(env.get("AGENT_MAX_CONCURRENCY", "2")),
                  claim_wait_seconds=float(env.get("AGENT_CLAIM_WAIT_SECONDS", "5")),
                  stop_grace_seconds=float(env.get("AGENT_GRACE_SECONDS", "20")))

    @agent.capability(env.get("AGENT_CAPABILITY", "acme.Hashtags"), kind="execution", input_facets=["post_copy"],
                      optional_input_facets=["company_information"], output_facets=["hashtags"])
    def hashtags(bundle: Bundle) -> dict[str, Any]:
        if call_log:
            with open(call_log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "attempt": bundle.attempt, "nodeId": bundle.node_id,
                                     "runId": bundle.run_id, "at": time.time(),
                                     "clarifications": [c.answer for c in bundle.clarifications]}) + "\n")
        time.sleep(sleep)
        if question and bundle.answer_to(question) is None:
            raise Clarify(question, options=["Yes", "No"])
        if output_mode == "invalid":
            return {"hashtags": ["no hash sign"]}
        company = (bundle.facets.get("company_information") or {}).get("name")
        return {"hashtags": suggest(str(bundle.facets["post_copy"]), company=company, limit=4) + [f"#Pid{os.getpid()}"]}

    agent.run()
    print("agent stats " + json.dumps(dict(agent.stats), sort_keys=True), flush=True)


if __name__ == "__main__":
    sys.exit(main())

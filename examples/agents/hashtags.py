"""A hashtag suggester: an agent that serves `acme.Hashtags` to a Flex Agents server.

It reads the post the copywriter wrote (`post_copy`, and the company's name
when the run has `company_information`) and suggests `hashtags`: the
company's own tag first, then the post's most frequent meaningful words,
CamelCased. Deterministic, no network but the server's.

Run it beside `make run`, in a second terminal, from the checkout:

    FLEX_TOKEN=<the agent token make run printed> .venv/bin/python examples/agents/hashtags.py

Environment: FLEX_URL (default http://127.0.0.1:8000), FLEX_TOKEN (an API
token of a user with the `agent` role: `manage.py flex_user NAME --role
agent --token`), FLEX_AGENT_ID (default acme-hashtags),
FLEX_HEARTBEAT_SECONDS (default 15), FLEX_MAX_CONCURRENCY (default 4).
Stop it with Ctrl-C or SIGTERM: it finishes (or hands back) what it holds.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter
from typing import Any

from flexagents_sdk import Agent, AgentError, Bundle, TaskFailed

CAPABILITY_ID = "acme.Hashtags"
MAX_TAGS = 5
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-'][A-Za-z0-9]+)*")
# Words that make poor hashtags whatever the post is about: function words
# and the filler of announcements.
_STOPWORDS = frozenset("""
    announce announcing announced proud excited pleased happy share sharing introducing guess news something
    look behind scenes week tell think feedback love judge talk works work better forward familiar answer
    imagine lands built build because demands values made today team focus highlight
    about above after again against also among and another any are around because been before being below
    between both but can cannot could did does doing down during each even every few for from further had has
    have having here how into its itself just know like made make many more most much must near need never
    new next not now off once only other our ours out over own same see should since some such than that the
    their theirs them then there these they this those through today too under until upon very want was way
    well were what when where which while who whom why will with within without would you your yours
    we us it is be an as at by do go if in me my no of on or so to up
""".split())


def suggest_hashtags(text: str, *, company: str | None = None, limit: int = MAX_TAGS) -> list[str]:
    """Up to `limit` hashtags for `text`: `company` CamelCased first, then
    words of four letters or more that are not stop words, most frequent
    first (ties: first seen first). Case-insensitively unique."""
    tags: list[str] = []
    seen: set[str] = set()

    def add(words: list[str]) -> None:
        tag = "#" + "".join(part[:1].upper() + part[1:] for word in words
                            for part in re.split(r"[^A-Za-z0-9]+", word) if part)
        tag = tag[:61]
        if len(tag) > 1 and tag.lower() not in seen and len(tags) < limit:
            seen.add(tag.lower())
            tags.append(tag)

    if company:
        add(company.split())
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for index, word in enumerate(_WORD.findall(text)):
        key = word.lower()
        if len(re.sub(r"[^a-z0-9]", "", key)) < 4 or key in _STOPWORDS:
            continue
        counts[key] += 1
        first.setdefault(key, index)
        spelling.setdefault(key, word)
    for key in sorted(counts, key=lambda k: (-counts[k], first[k])):
        add([spelling[key]])
    return tags


def build_agent(url: str, token: str, **options: Any) -> Agent:
    """The agent with its one capability (tests build it too)."""
    agent = Agent(url, token, agent_id=options.pop("agent_id", "acme-hashtags"),
                  display_name=options.pop("display_name", "Hashtag suggester"), **options)

    @agent.capability(CAPABILITY_ID, kind="execution", input_facets=["post_copy"],
                      optional_input_facets=["company_information"], output_facets=["hashtags"],
                      description="Suggests hashtags for the post: the company's own, then its key words.",
                      version="1.0.0")
    def hashtags(bundle: Bundle) -> dict[str, Any]:
        text = bundle.facets.get("post_copy")
        if not isinstance(text, str) or not text.strip():
            raise TaskFailed("missing_post_copy", "the bundle has no post_copy to read", retryable=False)
        company = bundle.facets.get("company_information") or {}
        name = company.get("name") if isinstance(company, dict) else None
        tags = suggest_hashtags(text, company=name if isinstance(name, str) else None)
        if not tags:
            raise TaskFailed("no_hashtags", "the post has no word that makes a hashtag", retryable=False)
        return {"hashtags": tags}

    return agent


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        sys.exit(f"{name} must be a number, got {value!r}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    token = os.environ.get("FLEX_TOKEN", "")
    if not token:
        sys.exit("Set FLEX_TOKEN to an agent's API token: `make run` prints one (\"Agent token\"), or "
                 "`.venv/bin/python manage.py flex_user hashtags-agent --role agent --token | tail -n1`.")
    agent = build_agent(os.environ.get("FLEX_URL", "http://127.0.0.1:8000"), token,
                        agent_id=os.environ.get("FLEX_AGENT_ID") or "acme-hashtags",
                        heartbeat_seconds=int(_env_number("FLEX_HEARTBEAT_SECONDS", 15)),
                        max_concurrency=int(_env_number("FLEX_MAX_CONCURRENCY", 4)))
    try:
        agent.run()
    except AgentError as exc:
        sys.exit(f"hashtags agent: {exc}")


if __name__ == "__main__":
    main()

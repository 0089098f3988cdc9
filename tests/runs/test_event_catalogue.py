"""docs/events.md's catalogue and the event builders cannot drift: the table
lists exactly the builders' event types and, per type, exactly the keys of
its payload's TypedDict (`key`? for the keys that are not always present)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from runs import events as ev

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """type -> (always present keys, optional keys), from the Event types table."""
    text = CATALOGUE.read_text().split("## Event types", 1)[1].split("\n## ", 1)[0]
    out: dict[str, tuple[set[str], set[str]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        payload = re.sub(r"\([^()]*\)", "", cells[2])  # remarks in parentheses name no keys
        required: set[str] = set()
        optional: set[str] = set()
        for token, mark in re.findall(r"`([^`]*)`(\??)", payload):
            name = re.match(r"[A-Za-z]+", token).group()
            (optional if mark else required).add(name)
        out[cells[0].strip("`")] = (required, optional)
    return out


def test_the_catalogue_lists_exactly_the_event_types_of_the_builders():
    assert set(documented()) == set(ev.EVENT_TYPES) == set(ev.PAYLOADS)


def test_every_type_documents_exactly_the_keys_of_its_payload():
    docs = documented()
    for type_, payload in ev.PAYLOADS.items():
        assert docs[type_] == (set(payload.__required_keys__), set(payload.__optional_keys__)), type_


def test_every_event_type_has_one_builder_and_builders_are_the_only_way_events_are_made():
    builders = {name for name, value in vars(ev).items() if name.startswith("event_") and inspect.isfunction(value)}
    assert builders - {"event_id", "event_frame"} == {f"event_{t}" for t in ev.EVENT_TYPES}
    root = Path(__file__).resolve().parents[2]
    made_elsewhere = [str(path.relative_to(root)) for app in ("runs", "hitl", "flexagents", "planner")
                      for path in (root / app).rglob("*.py")
                      if path != root / "runs" / "events.py" and "PendingEvent(" in path.read_text()]
    assert made_elsewhere == []


def test_a_builder_makes_its_type_with_the_documented_keys():
    event = ev.event_node_complete(node_id="n", capability_id="c", attempt=2, output_facets=["a"], duration_ms=1.5)
    assert (event.type, event.node_id) == ("node_complete", "n")
    assert event.payload == {"nodeId": "n", "capabilityId": "c", "attempt": 2, "outputFacets": ["a"],
                             "durationMs": 1.5}
    assert ev.event_complete(status="cancelled").payload == {"status": "cancelled", "reason": None}

"""The example agent's capability as a plain function (the agent itself runs
against a real server in tests/multiprocess/test_agents.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from django.conf import settings

from flexagents_sdk import Bundle, TaskFailed
from tests.clients.examples import load_hashtags

hashtags_module = load_hashtags()
POST = ("Today we are proud to announce it: Launch of the real-time audit trail feature. Akkuro made this for "
        "Compliance officers at mid-sized banks. Every audit trail entry is signed.")


def facet_schema(name: str) -> dict:
    catalog = json.loads((Path(settings.BASE_DIR) / "planner" / "catalog" / "facets.json").read_text())
    return next(f["schema"] for f in catalog["facets"] if f["name"] == name)


def test_the_company_comes_first_then_the_most_frequent_words() -> None:
    tags = hashtags_module.suggest_hashtags(POST, company="Akkuro")

    assert tags == ["#Akkuro", "#Audit", "#Trail", "#Launch", "#RealTime"]


def test_it_is_deterministic_and_case_insensitively_unique() -> None:
    text = "Banks banks BANKS need compliance. Compliance matters."
    assert hashtags_module.suggest_hashtags(text) == hashtags_module.suggest_hashtags(text) == \
        ["#Banks", "#Compliance", "#Matters"]


def test_names_of_several_words_become_one_camel_case_tag() -> None:
    assert hashtags_module.suggest_hashtags("", company="acme data-works ltd.") == ["#AcmeDataWorksLtd"]


def test_what_the_capability_returns_is_valid_against_the_hashtags_facet() -> None:
    agent = hashtags_module.build_agent("http://127.0.0.1:8000", "tok")
    function = agent.capabilities["acme.Hashtags"].function
    bundle = Bundle.from_json({"runId": "r", "nodeId": "hashtags", "facets": {
        "post_copy": POST + " " + " ".join(f"word{i}x" for i in range(30)),
        "company_information": {"name": "Akkuro"}}})

    output = function(bundle)

    jsonschema.validate(output["hashtags"], facet_schema("hashtags"))
    assert len(output["hashtags"]) == 5
    assert all(re.fullmatch(r"#[A-Za-z0-9_]+", tag) for tag in output["hashtags"])


@pytest.mark.parametrize("facets, code", [({}, "missing_post_copy"), ({"post_copy": "a an the"}, "no_hashtags")])
def test_a_post_it_cannot_tag_fails_for_good(facets: dict, code: str) -> None:
    function = hashtags_module.build_agent("http://127.0.0.1:8000", "tok").capabilities["acme.Hashtags"].function

    with pytest.raises(TaskFailed) as caught:
        function(Bundle.from_json({"runId": "r", "nodeId": "hashtags", "facets": facets}))
    assert (caught.value.code, caught.value.retryable) == (code, False)


def test_the_registration_matches_the_facet_catalog() -> None:
    agent = hashtags_module.build_agent("http://127.0.0.1:8000", "tok")
    catalog = {f["name"] for f in json.loads(
        (Path(settings.BASE_DIR) / "planner" / "catalog" / "facets.json").read_text())["facets"]}
    [capability] = agent.registration()["capabilities"]

    assert capability["capabilityId"] == "acme.Hashtags"
    assert set(capability["inputFacets"] + capability["optionalInputFacets"] + capability["outputFacets"]) <= catalog

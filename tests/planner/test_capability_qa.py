"""qa.ContentReview: a deterministic score and findings."""
from __future__ import annotations

from planner.capabilities.qa import MAX_BODY_CHARS, ContentReview, review
from planner.contracts import compile_facets, validate_instance
from tests.planner.bundles import bundle_for

GOOD = [{"headline": "H1", "body": "Body one", "callToAction": "Book a demo"},
        {"headline": "H2", "body": "Body two", "callToAction": "Book a demo"}]


def test_clean_variants_score_one() -> None:
    report = review(GOOD)
    assert report["score"] == 1.0
    assert [finding["severity"] for finding in report["findings"]] == ["info"]


def test_its_output_matches_its_compiled_contract() -> None:
    output = ContentReview().run(bundle_for("qa", {"copyVariants": GOOD}))
    assert validate_instance(compile_facets(["qa_report"]).schema, output) == []


def test_an_overlong_body_is_an_error() -> None:
    report = review([{"headline": "H", "body": "x" * (MAX_BODY_CHARS + 1), "callToAction": "Go"}])
    assert report["findings"][0]["severity"] == "error"
    assert report["findings"][0]["variant"] == 0
    assert report["score"] < 1


def test_repeated_bodies_are_a_warning() -> None:
    report = review([GOOD[0], dict(GOOD[0], headline="Other")])
    assert report["findings"] == [{"severity": "warning", "message": "The body repeats variant 0.", "variant": 1}]
    assert report["score"] == 0.9


def test_empty_fields_are_errors() -> None:
    report = review([{"headline": "", "body": "b", "callToAction": " "}])
    assert [finding["message"] for finding in report["findings"]] == ["The headline is empty.",
                                                                      "The callToAction is empty."]


def test_the_score_stays_between_zero_and_one() -> None:
    report = review([{"headline": "", "body": "", "callToAction": ""}] * 3)
    assert report["score"] == 0.0


def test_no_variants_is_an_error_not_a_crash() -> None:
    assert review([])["score"] < 1


def test_it_is_deterministic() -> None:
    assert review(GOOD) == review(GOOD)

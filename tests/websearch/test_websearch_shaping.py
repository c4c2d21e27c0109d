"""Result shaping: URLs, de-duplication, truncation, domain filters, page_age."""

from anyclaude.services.websearch import shaping
from searxng_fake import SHAPES, result


def raw(shape):
    return SHAPES[shape][2]["results"]


def test_only_absolute_http_urls_survive():
    out, usable = shaping.shape(raw("nullurls"))
    assert [r["url"] for r in out] == ["https://good.example.net/page"]
    assert usable == 1


def test_duplicates_are_removed_keeping_the_first():
    out, _ = shaping.shape(raw("duplicates"), max_results=20)
    assert [r["title"] for r in out] == ["First", "Query"]


def test_huge_fields_are_truncated_and_cleaned():
    out, _ = shaping.shape(raw("huge"))
    assert len(out) == 2
    assert len(out[0]["snippet"]) == shaping.SNIPPET_CHARS and out[0]["snippet"].endswith("…")
    assert len(out[0]["title"]) == shaping.TITLE_CHARS
    assert "<p>" not in out[1]["snippet"] and len(out[1]["snippet"]) <= shaping.SNIPPET_CHARS


def test_titles_lose_markup_and_entities():
    out, _ = shaping.shape(raw("results"))
    assert out[0]["title"] == "Python docs & more"
    assert out[0]["snippet"] == "The official docs."


def test_missing_title_falls_back_to_the_host():
    out, _ = shaping.shape([result("https://notitle.example.com/x", title=None)])
    assert out[0]["title"] == "notitle.example.com"


def test_page_age_from_published_date():
    out, _ = shaping.shape(raw("dated"))
    assert [r["page_age"] for r in out] == ["December 25, 2023", None, None, None]
    assert shaping.page_age("2024-05-01T12:00:00Z") == "May 1, 2024"


def test_allowed_domains_match_by_host_suffix():
    out, _ = shaping.shape(raw("domains"), allowed=["example.com"], max_results=20)
    assert [r["url"] for r in out] == ["https://example.com/1", "https://docs.example.com/2"]


def test_blocked_domains_match_by_host_suffix():
    out, _ = shaping.shape(raw("domains"), blocked=["example.com", "https://Other.org/"],
                           max_results=20)
    assert [r["url"] for r in out] == ["https://badexample.com/3",
                                       "https://example.com.evil.net/4"]


def test_domain_entries_with_a_path_match_that_path_only():
    items = [result("https://example.com/blog/post"), result("https://example.com/blogger"),
             result("https://example.com/shop")]
    out, _ = shaping.shape(items, allowed=["example.com/blog"])
    assert [r["url"] for r in out] == ["https://example.com/blog/post"]


def test_max_results_caps_but_usable_counts_everything():
    out, usable = shaping.shape(raw("many"), max_results=5)
    assert len(out) == 5 and usable == 40


def test_odd_items_are_ignored():
    out, usable = shaping.shape([None, "text", 3, {"url": "https://ok.example.com", "title": 5}])
    assert usable == 1 and out[0]["title"] == "ok.example.com" and out[0]["snippet"] == ""
    assert shaping.shape("not a list") == ([], 0)

"""The model page's "Online" section in Chromium: the table per version and the plot over time."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import shot
from .test_browser import expect

pytestmark = pytest.mark.slow


def test_online_section_shows_hits_and_a_plot(server, desktop):
    page, probe = desktop
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for user in (101, 102, 103, 104):
            body = http.get("/recommend", params={"user_id": user}).json()
            if user in (101, 102):  # two of four answers get a rating of a shown movie
                stored = http.post("/ratings", json={"user_id": user, "movie_id": body["items"][0]["movie_id"],
                                                     "rating": 4})
                assert stored.status_code == 201
        deadline = time.monotonic() + 30  # the recorder writes in the background (every 200 ms)
        while time.monotonic() < deadline:
            report = http.get("/model/online").json()
            if sum(v["impressions"] for v in report["versions"]) >= 4:
                break
            time.sleep(0.2)
    version = report["versions"][0]
    assert version["hit_impressions"] >= 2
    page.goto(server.url + "/model.html")
    ex = expect()
    row = page.locator(f'#online-table tr[data-version="{version["model_version"]}"]')
    ex(row).to_be_visible()
    ex(row.locator(".hit-rate")).to_contain_text(" %")
    ex(page.locator("#online-plot polyline.series")).to_have_count(len(report["versions"]))
    ex(page.locator("#online-split")).to_contain_text("current version serves every user")
    shot(page, "11-model-page-online")
    probe.assert_clean(server.url)


def test_more_like_this_on_a_recommendation_is_a_click(server, desktop):
    page, probe = desktop

    def clicks() -> int:
        versions = httpx.get(f"{server.url}/model/online", timeout=10).json()["versions"]
        return sum(round((v["click_rate"]["value"] or 0) * v["impressions"]) for v in versions)

    before = clicks()
    page.goto(server.url + "/")
    ex = expect()
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    page.locator("#recs-list > li.movie").first.locator('.movie-actions label.half[data-value="4"]').click()
    ex(page.locator("#recs-badge")).to_have_text("personalized")  # now a recorded /recommend answer
    with page.expect_response(lambda r: r.url.endswith("/events") and r.request.method == "POST") as posted:
        page.locator("#recs-list > li.movie").first.locator(".more-btn").click()
    assert posted.value.status == 201
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and clicks() <= before:
        time.sleep(0.2)
    assert clicks() == before + 1
    probe.assert_clean(server.url)

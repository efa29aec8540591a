"""End to end: a person in Chromium uses the front end served at / against the real API.

Each test opens its own browser context (fresh localStorage), so each new user is a new id.
Screenshots land in test-artifacts/e2e/.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from . import catalogue
from .conftest import API_KEY, PHONE, shot

pytestmark = pytest.mark.slow

SCI_FI_QUERIES = ["Star Wars", "Empire Strikes", "Terminator 2", "Aliens", "Blade Runner"]
ACTIONISH = {"Sci-Fi", "Action", "Adventure", "War"}


def _wait_until(page, predicate: str, timeout_s: float = 15.0) -> None:  # noqa: ANN001 - a playwright Page
    """Poll ``predicate`` (a JS function) until it is true. Not ``page.wait_for_function``: its
    polling evaluates the predicate with ``eval`` inside the page, which the pages' CSP (no
    'unsafe-eval') refuses when the first check is not already true; ``page.evaluate`` goes
    through the DevTools protocol, outside the page's CSP."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"not true within {timeout_s} s: {predicate}"
        time.sleep(0.05)


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


def ratings_of(server, user_id: int) -> list[dict]:
    data = httpx.get(f"{server.url}/users/{user_id}/ratings", timeout=10).json()
    return data if isinstance(data, list) else data.get("items") or data.get("ratings") or []


def current_user(page) -> int:
    expect()(page.locator("#current-user-id")).to_have_text(re.compile(r"^\d+$"))
    return int(page.locator("#current-user-id").inner_text())


def rec_ids(page) -> list[int]:
    return [int(x) for x in page.locator("#recs-list > li.movie").evaluate_all("els => els.map(e => e.dataset.movieId)")]


def search_and_rate(page, query: str, stars: str) -> str:
    """Search ``query``, click ``stars`` on the first hit, wait for the recommendations to refresh."""
    page.fill("#search-input", query)
    page.press("#search-input", "Enter")
    first = page.locator("#search-list > li.movie").first
    expect()(first.locator(".title")).to_contain_text(query.split()[0])
    title = first.locator(".title").inner_text()
    first.locator(f'label.half[data-value="{stars}"]').click()
    expect()(page.locator("#status")).to_contain_text(f"for {title}. Recommendations updated.")
    return title


def check_because(page, server, user_id: int) -> None:
    """Every recommendation shows "Because you rated ..." exactly as GET /recommend?explain=true says."""
    api = httpx.get(f"{server.url}/recommend", params={"user_id": user_id, "n": 10, "explain": "true"},
                    timeout=10).json()
    stored = {r["movie_id"]: r["rating"] for r in ratings_of(server, user_id)}
    rated = set(stored)
    items = page.locator("#recs-list > li.movie")
    assert [int(i) for i in items.evaluate_all("els => els.map(e => e.dataset.movieId)")] == \
        [it["movie_id"] for it in api["items"]]
    assert any(it["because"] for it in api["items"])
    for i, it in enumerate(api["items"]):
        because = items.nth(i).locator(".because")
        if not it["because"]:
            expect()(because).to_have_count(0)
            continue
        assert {r["movie_id"] for r in it["because"]} <= rated
        def stars(value: float) -> str:
            return f"{value:g}" if value != int(value) else str(int(value))

        titles = [f"{r['title']} ({stars(stored[r['movie_id']])}★)" for r in it["because"]]
        text = titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]
        expect()(because).to_have_text(f"Because you rated {text}")
        expect()(because).to_be_visible()
        assert because.get_attribute("data-movie-ids") == ",".join(str(r["movie_id"]) for r in it["because"])


def test_new_user_rates_five_movies_and_gets_personalized_recommendations(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/")
    ex = expect()
    # A new visitor sees popular movies, no user yet.
    ex(page.locator("#recs-heading")).to_have_text("Popular movies")
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    ex(page.locator("#recs-section")).to_have_attribute("data-personalized", "false")
    shot(page, "01-new-visitor-popular")

    page.click("#new-user")
    user_id = current_user(page)
    assert user_id >= 100000
    assert ratings_of(server, user_id) == []
    ex(page.locator("#recs-badge")).to_have_text("popular")
    before = rec_ids(page)

    # Four movies by mouse, with stars...
    rated = [search_and_rate(page, q, s) for q, s in zip(SCI_FI_QUERIES[:4], ["5", "4.5", "5", "4"])]
    shot(page, "02-after-four-ratings")

    # ...and the fifth with the keyboard only: Tab from the search button into the star group,
    # arrow to 4 stars (0.5 + 7 steps), Enter saves.
    page.fill("#search-input", SCI_FI_QUERIES[4])
    page.press("#search-input", "Enter")
    first = page.locator("#search-list > li.movie").first
    ex(first.locator(".title")).to_have_text("Blade Runner")
    page.focus("#search-form button[type=submit]")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.closest('li.movie')?.dataset.movieId")
    assert focused == first.get_attribute("data-movie-id"), "Tab should land in the first result's stars"
    outline = first.locator("fieldset.stars").evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline == "solid", "the focused star rating must show a focus outline"
    for _ in range(7):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    ex(page.locator("#status")).to_contain_text("Saved 4 stars for Blade Runner. Recommendations updated.")
    rated.append("Blade Runner")

    # The API stored exactly what was clicked.
    stored = {r["movie_id"]: r["rating"] for r in ratings_of(server, user_id)}
    assert sorted(stored.values()) == [4.0, 4.0, 4.5, 5.0, 5.0]
    ex(page.locator("#rated-count")).to_have_text("(5)")

    # Personalized recommendations appeared, from the real API (fold-in), with predictions.
    ex(page.locator("#recs-heading")).to_have_text("Recommended for you")
    ex(page.locator("#recs-badge")).to_have_text("personalized")
    ex(page.locator("#recs-section")).to_have_attribute("data-personalized", "true")
    items = page.locator("#recs-list > li.movie")
    ex(items).to_have_count(10)
    api = httpx.get(f"{server.url}/recommend", params={"user_id": user_id, "n": 10}, timeout=10).json()
    assert api["personalized"] is True
    assert rec_ids(page) == [it["movie_id"] for it in api["items"]]
    assert rec_ids(page) != before
    assert not set(rec_ids(page)) & set(stored), "rated movies must not be recommended"
    for i in range(items.count()):
        item = items.nth(i)
        ex(item.locator(".title")).not_to_be_empty()
        ex(item.locator(".year")).to_have_text(re.compile(r"^\(\d{4}\)$"))
        ex(item.locator(".genres li").first).to_be_visible()
        value = float(item.locator(".predicted-value").inner_text())
        assert 0.5 <= value <= 5.0
    # Each recommendation says why, naming only movies this user rated (the API's explain=true, fold-in).
    check_because(page, server, user_id)
    # The synthetic users who like Sci-Fi like action/adventure: most of the top 5 should be in that cluster.
    genres = {m[0]: set(m[3].split("|")) for m in catalogue.MOVIES}
    top = rec_ids(page)[:5]
    assert sum(bool(genres[m] & ACTIONISH) for m in top) >= 3, [catalogue.MOVIES[m - 1][1] for m in top]
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "03-personalized-desktop")
    shot(page, "03-personalized-desktop-viewport", full_page=False)

    # A reload keeps the user (localStorage) and shows the five ratings.
    page.reload()
    assert current_user(page) == user_id
    ex(page.locator("#rated-list > li")).to_have_count(5)
    ex(page.locator("#recs-badge")).to_have_text("personalized")
    probe.assert_clean(server.url)


def test_more_like_this_and_remove_rating(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/")
    ex = expect()
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    first = page.locator("#recs-list > li.movie").first
    movie_id = int(first.get_attribute("data-movie-id"))
    button = first.locator(".more-btn")
    ex(button).to_have_attribute("aria-expanded", "false")
    button.click()
    ex(button).to_have_attribute("aria-expanded", "true")
    similar = first.locator(".similar-list > li.similar-item")
    ex(similar.first).to_be_visible()
    api = httpx.get(f"{server.url}/movies/{movie_id}/similar", params={"n": 6}, timeout=10).json()
    api_items = api if isinstance(api, list) else api.get("items", [])
    shown = [int(x) for x in similar.evaluate_all("els => els.map(e => e.dataset.movieId)")]
    assert shown == [it["movie_id"] for it in api_items]
    assert movie_id not in shown
    shot(page, "04-more-like-this")

    # Rating from the popular list (no user yet) starts a new user on the fly; Remove deletes it.
    first.locator('.movie-actions label.half[data-value="3"]').click()
    user_id = current_user(page)
    ex(page.locator("#status")).to_contain_text("Recommendations updated.")
    assert [r["movie_id"] for r in ratings_of(server, user_id)] == [movie_id]
    page.locator("#rated-list .remove-btn").first.click()
    ex(page.locator("#status")).to_contain_text("Removed your rating")
    ex(page.locator("#rated-list > li")).to_have_count(0)
    assert ratings_of(server, user_id) == []
    probe.assert_clean(server.url)


def test_existing_user_by_id(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/")
    ex = expect()
    page.fill("#user-id", "7")
    page.press("#user-id", "Enter")
    ex(page.locator("#current-user-id")).to_have_text("7")
    n = len(ratings_of(server, 7))
    assert n > 0
    ex(page.locator("#rated-count")).to_have_text(f"({n})")
    ex(page.locator("#recs-badge")).to_have_text("personalized")
    # Genre filter goes to the API (genre=...): every item shown has that genre.
    page.select_option("#filter-genre", "Comedy")
    ex(page.locator("#recs-list > li.movie .genres").first).to_contain_text("Comedy")
    _wait_until(page, "() => document.querySelector('#recs-list').getAttribute('aria-busy') === 'false'")
    for text in page.locator("#recs-list > li.movie .genres").all_inner_texts():
        assert "Comedy" in text
    shot(page, "05-existing-user-7-comedy")
    # A bad id is explained, not sent.
    page.fill("#user-id", "-3")
    page.press("#user-id", "Enter")
    ex(page.locator("#alert")).to_contain_text("positive whole number")
    probe.assert_clean(server.url)


def test_because_you_rated_and_predicted_stars_explained(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/?user=7")
    ex = expect()
    ex(page.locator("#current-user-id")).to_have_text("7")
    ex(page.locator("#recs-badge")).to_have_text("personalized")
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    _wait_until(page, "() => document.querySelector('#recs-list').getAttribute('aria-busy') === 'false'")
    check_because(page, server, 7)
    # Ranking and predicted stars are told apart: the list says what it is ranked by, each star figure
    # is labelled as predicted stars with the difference in its tooltip, and a modest prediction says why it ranks.
    ex(page.locator("#recs-note")).to_contain_text("ranked by how likely you are to watch")
    ex(page.locator("#recs-note")).to_contain_text("Predicted stars")
    predictions = page.locator("#recs-list > li.movie .prediction")
    ex(predictions).to_have_count(10)
    for i in range(10):
        pred = predictions.nth(i)
        ex(pred).to_contain_text("Predicted stars")
        assert "ranked by how likely you are to watch" in pred.get_attribute("title")
        value = float(pred.locator(".predicted-value").inner_text())
        ex(pred.locator(".rank-hint")).to_have_count(1 if value < 3.5 else 0)
    shot(page, "05b-because-you-rated")
    probe.assert_clean(server.url)


def test_phone_layout(server, phone):
    page, probe = phone
    page.goto(server.url + "/")
    ex = expect()
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    shot(page, "06-phone-popular", full_page=False)
    page.click("#new-user")
    current_user(page)
    search_and_rate(page, "Toy Story", "5")
    search_and_rate(page, "Aladdin", "4.5")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"horizontal scrolling on a phone: page is {width}px wide"
    # Touch-sized stars: each whole star at least 20 px.
    box = page.locator("#recs-list fieldset.stars").first.bounding_box()
    assert box and box["height"] >= 20
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "07-phone-after-rating")
    probe.assert_clean(server.url)


def test_model_page(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/model.html")
    ex = expect()
    model = httpx.get(f"{server.url}/model", timeout=10).json()
    version = model.get("version", model.get("model_version"))
    ex(page.locator("#model-version")).to_have_text(f"v{version}")
    figures = page.locator("#figures img")
    ex(figures).to_have_count(2)
    _wait_until(page, "() => [...document.querySelectorAll('#figures img')].every(i => i.complete && i.naturalWidth > 0)")
    srcs = figures.evaluate_all("els => els.map(e => e.getAttribute('src'))")
    assert srcs == ["model/files/curves.png", "model/files/movie_pca.png"]
    shot(page, "08-model-page")
    # The model's metrics beside the baseline's (the manifest's metrics and baseline_metrics).
    rmse = page.locator('#metrics-table tr[data-metric="rmse"]')
    ex(rmse.locator(".model-value")).to_have_text(re.compile(r"^\d\.\d{4}$"))
    ex(rmse.locator(".baseline-value")).to_have_text(re.compile(r"^\d\.\d{4}$"))
    probe.assert_clean(server.url)


def test_api_docs_render_under_the_csp(server, desktop):
    """/docs is Swagger UI from this origin (no CDN), started by a script file: the page's CSP allows
    no inline script, and a violation would be a console error."""
    page, probe = desktop
    response = page.goto(server.url + "/docs")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    ex = expect()
    ex(page.locator(".opblock-summary-path", has_text="/recommend").first).to_be_visible()
    ex(page.locator(".opblock-summary-path", has_text="/ratings").first).to_be_visible()
    shot(page, "10-api-docs")
    probe.assert_clean(server.url)


def test_api_key_required(keyed_server, desktop):
    page, probe = desktop
    page.goto(keyed_server.url + "/")
    ex = expect()
    page.click("#new-user")
    user_id = current_user(page)
    page.fill("#search-input", "Fargo")
    page.press("#search-input", "Enter")
    hit = page.locator("#search-list > li.movie").first
    ex(hit.locator(".title")).to_have_text("Fargo")
    hit.locator('label.half[data-value="4"]').click()
    alert = page.locator("#alert")
    ex(alert).to_contain_text("needs an API key")
    ex(page.locator("#api-key")).to_be_focused()
    ex(hit.locator(".stars-value")).to_have_text("Not rated")
    assert ratings_of(keyed_server, user_id) == []
    shot(page, "09-api-key-needed")

    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")
    hit.locator('label.half[data-value="4"]').click()
    ex(page.locator("#status")).to_contain_text("Saved 4 stars for Fargo")
    ex(alert).to_be_hidden()
    assert [r["rating"] for r in ratings_of(keyed_server, user_id)] == [4.0]
    probe.assert_clean(keyed_server.url, allow=("401",))



UNNAMED_CONTROLS = """() => [...document.querySelectorAll('input, select, button, textarea')]
    .filter(e => e.offsetParent !== null || e.type === 'radio')
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map(e => e.outerHTML.slice(0, 120))"""


def test_every_control_has_a_name(server, desktop):
    page, probe = desktop
    page.goto(server.url + "/")
    ex = expect()
    ex(page.locator("#recs-list > li.movie")).to_have_count(10)
    page.fill("#search-input", "Star")
    page.press("#search-input", "Enter")
    ex(page.locator("#search-list > li.movie").first).to_be_visible()
    assert page.evaluate(UNNAMED_CONTROLS) == []
    assert page.locator("html").get_attribute("lang") == "en"
    # Each star rating is a named radio group: legend "Your rating of <title>", radios "N stars".
    group = page.locator("#search-list fieldset.stars").first
    ex(group.locator("legend")).to_contain_text("Your rating of ")
    ex(group.get_by_role("radio")).to_have_count(10)
    ex(group.get_by_role("radio", name="4.5 stars")).to_have_count(1)
    page.goto(server.url + "/model.html")
    ex(page.locator("#metrics-table tbody tr").first).to_be_visible()
    assert page.evaluate(UNNAMED_CONTROLS) == []
    probe.assert_clean(server.url)

"""The playground's form for illusions, in a real browser against the real API, worker and Redis: a three-view
anagram with per-view arguments typed as JSON, sent without the `view` shorthand's default, and its artifacts shown."""

from typing import Any

from tests.e2e.test_playground import browser, choose, enter_key, fill, gallery_loaded, page, submit_and_finish  # noqa: F401


def test_a_three_view_anagram_from_the_form_shows_each_view_and_the_animation(page: Any, client: Any, api_key: str):  # noqa: F811
    enter_key(page, api_key)
    choose(page, "mnist-flow", "anagram")
    args = '[null, null, {"patch_size": 7, "seed": 3}]'
    fill(page, {"prompts": "7, 2, 4", "views": "identity, flip, patch_permute", "view_args": args, "steps": "4"})
    job = submit_and_finish(page, client)
    assert job["status"] == "succeeded", job
    assert "view" not in job["params"] or job["params"]["views"] == ["identity", "flip", "patch_permute"]
    assert job["params"]["view_args"] == [None, None, {"patch_size": 7, "seed": 3}]
    shown = {f["name"] for f in gallery_loaded(page)}
    assert shown == {a["name"] for a in job["artifacts"]} >= {"view_0.png", "view_1.png", "view_2.png", "animation.gif"}


def test_view_args_that_are_not_a_json_list_are_refused_at_the_field(page: Any, client: Any, api_key: str):  # noqa: F811
    enter_key(page, api_key)
    choose(page, "mnist-flow", "anagram")
    page.fill("[data-field=prompts] input", "7, 2")
    page.fill("[data-field=view_args] input", "{patch_size: 7}")
    page.click("#submit")
    error = page.wait_for_selector("[data-field=view_args] .error:not(:empty)").inner_text()
    assert "JSON" in error
    page.fill("[data-field=view_args] input", '[null, {"patch_size": 5}]')
    page.select_option("[data-field=view] select", "patch_permute")
    page.click("#submit")
    error = page.wait_for_selector("[data-field=view_args] .error:not(:empty)").inner_text()
    assert "must divide the image side, 28" in error
    assert client.get("/v1/jobs").json()["jobs"] == []

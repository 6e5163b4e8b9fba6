"""/docs and /redoc work with no internet: every script, style sheet and icon they load is served by the API."""

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx
import pytest

from tests.helpers import Stack, running_stack

MEDIA = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",), ".png": ("image/png",)}


class Links(HTMLParser):
    """The URLs a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [value for name, value in attrs if name == wanted and value]


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("docs"), workers=0) as stack:
        yield stack


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_of_the_docs_is_served_locally(api, page):
    response = httpx.get(api.url + page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text and "//cdn" not in response.text
    parser = Links()
    parser.feed(response.text)
    assert len(parser.urls) >= 2, parser.urls  # the script and the icon at least
    for url in parser.urls:
        assert url.startswith("/"), url
        asset = httpx.get(urljoin(api.url + page, url))
        assert asset.status_code == 200, url
        media_type = asset.headers["content-type"].split(";")[0]
        assert media_type in MEDIA["." + url.rsplit(".", 1)[-1]], (url, media_type)
        assert len(asset.content) > 100, url
    assert "'/openapi.json'" in response.text or 'spec-url="/openapi.json"' in response.text


def test_the_swagger_ui_page_names_its_local_script_and_style(api):
    html = httpx.get(api.url + "/docs").text
    assert '<script src="/docs/assets/swagger-ui-bundle.js">' in html
    assert 'href="/docs/assets/swagger-ui.css"' in html
    assert '"validatorUrl": null' in html
    assert httpx.get(api.url + "/docs/oauth2-redirect").status_code == 200


def test_openapi_json_still_describes_the_api(api):
    schema = httpx.get(api.url + "/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/metrics", "/healthz"} <= paths.keys()
    assert not any(p.startswith("/docs") or p == "/redoc" for p in paths)

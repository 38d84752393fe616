"""What people see in a browser, rendered by headless Chromium with the network off:
the API's /docs (an intranet without internet access) and a model card with its plots.

Run by ``./run.sh test-browser`` (and CI), which needs Chromium (``apt-get install
chromium``); ``./run.sh test`` leaves these out, so that it runs without a browser.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx2
import pytest
from world import drop_all, served_over_http, small_config, small_data

from shared.api import create_app
from shared.pipeline import retrain
from shared.registry import CARD_HTML
from shared.storage import LocalFolderStore

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
CONFIG = small_config()
DATA = small_data()
EXTERNAL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _browser() -> ModuleType:
    spec = importlib.util.spec_from_file_location("browser", REPO / "scripts" / "browser.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browser = _browser()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalFolderStore:
    assert browser.find_chromium(), "Chromium not found: apt-get install chromium"
    store = LocalFolderStore(tmp_path_factory.mktemp("browser") / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return store


@pytest.fixture(scope="module")
def base_url(store: LocalFolderStore) -> Iterator[str]:
    with served_over_http(create_app(store, CONFIG)) as url:
        yield url


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_no_page_the_app_serves_loads_anything_from_outside(base_url: str, path: str) -> None:
    page = httpx2.get(base_url + path)
    assert page.status_code == 200
    assert not EXTERNAL.findall(page.text), EXTERNAL.findall(page.text)
    assets = re.findall(r"""(?:src|href)="(/[^"]+)\"""", page.text)
    assert assets, "the page names no asset of its own"
    for asset in assets:
        assert httpx2.get(base_url + asset).status_code == 200, asset


def test_docs_render_every_operation_with_the_network_off(base_url: str) -> None:
    document = httpx2.get(f"{base_url}/openapi.json").json()
    operations = {
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    }
    rendered = browser.dom(f"{base_url}/docs")
    shown = set(
        re.findall(
            r'opblock-summary-method">(\w+)<.*?data-path="([^"]+)"', rendered, flags=re.DOTALL
        )
    )
    assert shown == operations, f"missing {operations - shown}"


PROBE = """
<script>
window.addEventListener("load", () => {
  const sizes = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script>
"""


def test_a_model_card_renders_with_its_plots(store: LocalFolderStore, tmp_path: Path) -> None:
    path = next(b.path for b in store.list("models/") if b.path.endswith(CARD_HTML))
    card = store.read(path).decode()
    assert not EXTERNAL.findall(card)  # self-contained: nothing fetched from outside
    images = card.count("<img ")
    assert images >= 2  # the training curve and the spread over the catalog
    page = tmp_path / "card.html"
    page.write_text(card.replace("</body>", PROBE + "</body>"))
    rendered = browser.dom(page)
    probe = re.search(r'<pre id="probe">(.*?)</pre>', rendered, flags=re.DOTALL)
    assert probe, "the page did not finish loading"
    sizes = json.loads(probe.group(1))
    assert len(sizes) == images
    assert all(done and width > 100 and height > 100 for done, width, height in sizes), sizes

"""The route on the real serve app (``make_app``, with and without the archive), over HTTP."""

from __future__ import annotations

from newsletter.config import load_settings
from newsletter.web import make_app
from tests.webhooks.conftest import HTTP, serve
from tests.webhooks.kits import KITS, NOW, READERS


def test_make_app_routes_webhooks_even_with_the_archive(tmp_path, db, keys):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "index.html").write_text("<!doctype html><title>archive</title>")
    settings = load_settings(tmp_path, environ=keys.env())
    url, stop = serve(make_app(settings, store_path=db, site_dir=site_dir))
    try:
        kit = KITS["postmark"](keys)  # Postmark has no timestamp, so the app's real clock is fine here
        signed = kit.sign(kit.payload("complaint", READERS[0], "mount"), at=NOW)
        r = HTTP.post(f"{url}/webhooks/postmark", data=signed.body, headers=signed.headers, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        assert HTTP.post(f"{url}/webhooks/nope", data=b"{}", timeout=10).status_code == 404
        assert HTTP.get(f"{url}/", timeout=10).status_code == 200  # the archive still answers
    finally:
        stop()
    from newsletter.store import SubscriberStore

    with SubscriberStore.open(db) as store:
        assert store.get_by_email(READERS[0]).status == "complained"

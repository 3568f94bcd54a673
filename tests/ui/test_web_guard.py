"""What the web UI (`r1 ui`) refuses before any tab runs: a forged Host (DNS rebinding), a cross-site request that
would change something (Gradio's queue runs every event, listing and reading conversations included), and uploads.
No model is loaded: every request here is refused, or served without the engine."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from app import Settings
from app.runtime import Runtime
from tests.servers import free_port


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The web app on a free loopback port over a runtime whose model is never loaded; (url, its data dir)."""
    data = tmp_path_factory.mktemp("web-guard-data")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("R1_DATA_DIR", str(data))
        from ui import web as web_ui

        port = free_port()
        demo = web_ui.start(Runtime(Settings(data_dir=str(data), allowed_hosts=("r1.lan",))), "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}", data
        finally:
            demo.close()


def stored_bytes(data: Path) -> int:
    """Bytes of the files Gradio keeps under the data directory (uploads land in gradio-tmp)."""
    return sum(path.stat().st_size for path in (data / "gradio-tmp").rglob("*") if path.is_file())


def test_a_forged_host_is_refused(web):
    url, _ = web
    port = url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "10.0.0.5"):
        refused = httpx.get(url + "/", headers={"Host": host})
        assert refused.status_code == 403, host
        assert "does not name this server" in refused.json()["error"]["message"]
        assert httpx.get(url + "/gradio_api/info", headers={"Host": host}).status_code == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "r1.lan"):
        assert httpx.get(url + "/", headers={"Host": host}).status_code == 200, host


def test_a_cross_site_event_is_refused(web):
    url, _ = web
    join = {"data": [], "fn_index": 0, "session_hash": "attacker", "event_data": None, "trigger_id": None}
    refused = httpx.post(url + "/gradio_api/queue/join", json=join, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert "cross-site" in refused.json()["error"]["message"]


def test_uploads_are_refused_cross_site_and_capped_same_site(web):
    url, data = web
    before = stored_bytes(data)
    files = {"files": ("big.bin", os.urandom(20 << 20), "application/octet-stream")}
    cross_site = httpx.post(
        url + "/gradio_api/upload", files=files, headers={"Origin": "http://evil.example"}, timeout=60
    )
    assert cross_site.status_code == 403
    same_site = httpx.post(url + "/gradio_api/upload", files=files, headers={"Origin": url}, timeout=60)
    assert same_site.status_code == 413  # the app has no upload component: no file is taken
    assert stored_bytes(data) == before

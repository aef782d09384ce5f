"""/openapi.json and /docs on the running API (the document's content is checked in tests/unit/test_openapi.py)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import requests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_openapi_json_is_served_and_lists_the_three_families(stack):
    answer = requests.get(f"{stack.api_url}/openapi.json", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    paths = answer.json()["paths"]
    for path in ("/push/message/batch/send", "/session/{session_id}", "/clients/{client_id}", "/admin/app/create"):
        assert path in paths, path


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_docs_page_renders_every_operation_in_headless_chromium(stack, tmp_path):
    document = requests.get(f"{stack.api_url}/openapi.json", timeout=30).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", f"{stack.api_url}/docs"]
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Swagger UI (served from this server, no CDN) draws one block per operation.
    rendered = len(re.findall(r'class="opblock opblock-', dom.stdout))
    assert rendered == operations, (rendered, operations)

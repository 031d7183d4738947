"""A headset's way in, over HTTPS: `theatrum serve --tls` with its self-signed certificate. Chromium that trusts
that certificate (by its public key, as a headset told to trust it would) opens an https invite link, the page is a
secure context (what WebXR requires), and the room shows the skull; a browser that does not trust it is stopped at
the certificate, before any page loads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from browsing import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TEST_TRIANGLES,
    Client,
    bone_fraction,
    build_meshes,
    create_room,
    require_module,
    wait_for_study,
    write_sample_phantom,
)
from conftest import REPO, free_port, require_tool
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from serverproc import THEATRUM, Api, ServerProcess

ARTIFACTS = REPO / "tests" / "artifacts"


def spki_hash(cert: Path) -> str:
    """base64 SHA-256 of the certificate's public key: what --ignore-certificate-errors-spki-list takes."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """`theatrum serve --tls --import <sample phantom>`, its admin Api over verified HTTPS, and the certificate."""
    folder = write_sample_phantom(tmp_path_factory.mktemp("phantom") / "phantom")  # as `make run` writes it
    data = tmp_path_factory.mktemp("theatrum") / "data"
    data.mkdir()
    port = free_port()
    log_path = data.parent / f"server-{port}.log"
    log = open(log_path, "ab")  # noqa: SIM115 (closed by ServerProcess.close)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THEATRUM_")}
    process = subprocess.Popen(
        [str(THEATRUM), "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data), "--tls",
         "--import", str(folder)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"},
        cwd=data.parent, start_new_session=True)
    server = ServerProcess(process, data, port, log_path, _log=log)
    cert = data / "tls" / "theatrum-cert.pem"
    try:
        end = time.monotonic() + 60
        while not (data / "admin-token").exists() or not cert.exists():
            server.check_alive()
            assert time.monotonic() < end, server.output()
            time.sleep(0.1)
        api = Api("127.0.0.1", port, (data / "admin-token").read_text().strip(),
                  tls=ssl.create_default_context(cafile=str(cert)))
        while True:
            try:
                if api.get("/api/health", auth=False).status == 200:
                    break
            except OSError:
                server.check_alive()
                assert time.monotonic() < end, server.output()
                time.sleep(0.1)
        yield server, api, cert
    finally:
        if server.stop() is None:
            server.kill_group()


def chromium(playwright, *extra: str):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra])


def test_a_page_joins_over_tls_with_the_self_signed_certificate(tls_server):
    require_tool(CHROMIUM, "Chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = require_module("playwright.sync_api", "Playwright (pip install playwright)")
    server, api, cert = tls_server
    study = wait_for_study(api, server)
    bone = build_meshes(api, server, study["id"], {"presets": ["bone"], "target_triangles": TEST_TRIANGLES})
    created = create_room(api, study["id"], [bone[0]["id"]], mode="consult", title="Over TLS")
    link = created["invites"]["surgeon"]["link"]
    base = f"https://127.0.0.1:{server.port}"
    assert link.startswith(f"{base}/?invite="), link  # the link a headset opens is https
    with sync_api.sync_playwright() as playwright:
        stranger = chromium(playwright)
        try:
            page = stranger.new_page()
            with pytest.raises(sync_api.Error, match="ERR_CERT"):
                page.goto(link)
        finally:
            stranger.close()
        trusting = chromium(playwright, f"--ignore-certificate-errors-spki-list={spki_hash(cert)}")
        try:
            surgeon = Client(trusting, base, link.split("?", 1)[1])
            surgeon.wait_ready()
            assert surgeon.js("window.isSecureContext") is True
            assert surgeon.js("location.protocol") == "https:"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            view = surgeon.page.locator("#viewport canvas").first
            share = bone_fraction(view.screenshot(path=ARTIFACTS / "tls-room.png"), box=0.6)
            assert share > 0.01, f"{share:.1%} of the view is skull (see tls-room.png)"
            assert not surgeon.errors, surgeon.errors
            surgeon.close()
        finally:
            trusting.close()

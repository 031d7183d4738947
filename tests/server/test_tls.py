"""HTTPS for headsets: `theatrum serve --tls` makes a self-signed certificate whose names cover this host, keeps
it in the data folder (key 0600) and reuses it, makes it again when this host's addresses are not all in it or it
nears expiry; the server then answers HTTPS that verifies against that certificate, for the loopback and the LAN
address; links use https and, listening on every interface, the LAN address. A certificate that is not one, or a
key without its certificate, exits 2 naming the file.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port
from cryptography import x509
from serverproc import THEATRUM

from server.services import tls


def sans_of(path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(sans.get_values_for_type(x509.DNSName)), {str(a) for a in sans.get_values_for_type(x509.IPAddress)}


def test_the_self_signed_certificate_names_this_host_and_is_kept(tmp_path: Path):
    made = tls.self_signed(tmp_path / "tls")
    names, addresses = sans_of(made.cert)
    assert {"localhost"} <= names and {"127.0.0.1", "::1"} <= addresses
    lan = tls.lan_address()
    if lan is not None:
        assert str(ipaddress.ip_address(lan)) in addresses
    assert made.key.stat().st_mode & 0o777 == 0o600
    first = made.cert.read_bytes()
    assert tls.self_signed(tmp_path / "tls").cert.read_bytes() == first  # kept
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=tls.VALID_DAYS - 10)
    assert tls.self_signed(tmp_path / "tls", now=later).cert.read_bytes() != first  # near expiry: made again


def test_a_certificate_missing_an_address_is_made_again(tmp_path: Path, monkeypatch):
    tls.self_signed(tmp_path / "tls")
    names, addresses = tls.host_addresses()
    monkeypatch.setattr(tls, "host_addresses", lambda: (names, [*addresses, "10.99.0.7"]))
    remade = tls.self_signed(tmp_path / "tls")
    assert "10.99.0.7" in sans_of(remade.cert)[1]


def serve(data: Path, *args: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = data.parent / f"serve-{port}.log"
    process = subprocess.Popen([str(THEATRUM), "serve", "--port", str(port), "--data", str(data), *args],
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                               stdin=subprocess.DEVNULL, start_new_session=True)
    return process, port, log


def https_get(host: str, port: int, path: str, cafile: Path) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_https(process: subprocess.Popen, host: str, port: int, cafile: Path, log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert process.poll() is None, log.read_text()
        if cafile.exists():
            try:
                if https_get(host, port, "/api/health", cafile)[0] == 200:
                    return
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.1)
    raise AssertionError(f"no HTTPS answer: {log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_serve_tls_on_the_network_verifies_and_links_carry_https_and_the_lan_address(tmp_path: Path):
    data = tmp_path / "data"
    process, port, log = serve(data, "--host", "0.0.0.0", "--tls")
    cert = data / "tls" / "theatrum-cert.pem"
    try:
        wait_https(process, "127.0.0.1", port, cert, log)
        lan = tls.lan_address()
        host = lan or "127.0.0.1"
        # Verified against the server's own certificate, by the address a headset would use.
        status, _ = https_get(host, port, "/api/health", cert)
        assert status == 200
        shown = f"[{host}]" if ":" in host else host
        banner = log.read_text()
        assert f"is serving on https://{shown}:{port}" in banner, banner
        token = (data / "admin-token").read_text().strip()
        context = ssl.create_default_context(cafile=str(cert))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        connection.request("GET", "/api/config", headers={"Authorization": f"Bearer {token}"})
        assert connection.getresponse().status == 200
        connection.close()
        # Plain HTTP on the same port is not served.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            plain.request("GET", "/api/health")
            answered = plain.getresponse().status
        except (http.client.HTTPException, OSError):
            answered = None
        assert answered is None or answered >= 400, f"plain HTTP got {answered}"
    finally:
        stop(process)
    # A restart keeps the certificate (a headset that trusted it keeps trusting it).
    first = cert.read_bytes()
    process, port, log = serve(data, "--host", "127.0.0.1", "--tls")
    try:
        wait_https(process, "127.0.0.1", port, cert, log)
        assert cert.read_bytes() == first
        assert json.loads(https_get("127.0.0.1", port, "/api/health", cert)[1])
    finally:
        stop(process)


@pytest.mark.parametrize(("make", "named"), [
    (lambda d: ["--tls-cert", str(d / "nothing.pem"), "--tls-key", str(d / "nothing-key.pem")], "nothing.pem"),
    (lambda d: ["--tls-cert", str(d / "garbage.pem"), "--tls-key", str(d / "garbage.pem")], "garbage.pem"),
    (lambda d: ["--tls-cert", str(d / "garbage.pem")], "--tls-key"),
])
def test_an_unusable_certificate_exits_2_naming_it(tmp_path: Path, make, named):
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    result = subprocess.run([str(THEATRUM), "serve", "--port", str(free_port()), "--data", str(tmp_path / "data"),
                             *make(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert named in result.stderr and "Traceback" not in result.stderr + result.stdout, result.stderr

"""HTTPS for headsets: WebXR needs a secure origin off localhost.

`theatrum serve --tls` makes a self-signed certificate at first start (ECDSA P-256, with `cryptography`), its
subject alternative names covering this host's names and addresses, kept in the data folder (`tls/`), and makes
it again when the addresses change or it is within 30 days of expiry. A hospital's own certificate is given with
`--tls-cert`/`--tls-key` instead. Links and QR codes use the address a headset can reach: `THEATRUM_PUBLIC_URL`,
else this host's LAN address when the server listens beyond loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.storage.files import atomic_write

VALID_DAYS = 825  # the longest a browser accepts for a server certificate it is told to trust
RENEW_DAYS = 30
WILDCARDS = ("0.0.0.0", "::", "")


class TlsError(ValueError):
    """A certificate or key that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def lan_address() -> str | None:
    """This host's address on the network it routes through (no packet is sent), or None without one."""
    for probe, family in (("10.255.255.255", socket.AF_INET), ("fd00::1", socket.AF_INET6)):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 1))
                address = s.getsockname()[0]
        except OSError:
            continue
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def host_addresses() -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) that name this host: localhost and the hostname, loopback, the LAN address and
    every address the hostname resolves to."""
    names = ["localhost"]
    hostname = socket.gethostname()
    if hostname and hostname not in names:
        names.append(hostname)
    addresses = {"127.0.0.1", "::1"}
    lan = lan_address()
    if lan:
        addresses.add(lan)
    try:
        for info in socket.getaddrinfo(hostname, None):
            addresses.add(info[4][0].split("%")[0])
    except OSError:
        pass
    return names, sorted(addresses)


def reachable_host(host: str) -> str:
    """The host part of links for a server listening on `host`: itself, or the LAN address for a wildcard."""
    if host in WILDCARDS:
        lan = lan_address()
        return lan if lan else "127.0.0.1"
    return host


def self_signed(folder: Path, now: datetime.datetime | None = None) -> Certificate:
    """The self-signed certificate in `folder` (made, or made again, as the module says). The key is 0600."""
    now = now or datetime.datetime.now(datetime.UTC)
    names, addresses = host_addresses()
    cert_path, key_path = folder / "theatrum-cert.pem", folder / "theatrum-key.pem"
    if cert_path.exists() and key_path.exists() and _still_good(cert_path, names, addresses, now):
        return Certificate(cert_path, key_path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Theatrum (self-signed)")])
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    atomic_write(key_path, key_pem, mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return Certificate(cert_path, key_path)


def _still_good(cert_path: Path, names: list[str], addresses: list[str], now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, OSError):
        return False
    covered = set(sans.get_values_for_type(x509.DNSName)) | {
        str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - now > datetime.timedelta(days=RENEW_DAYS)
    return fresh and set(names) | {str(ipaddress.ip_address(a)) for a in addresses} <= covered


def server_context(certificate: Certificate) -> ssl.SSLContext:
    """A TLS server context for the certificate and key. Raises TlsError naming a missing or unusable file."""
    for path in (certificate.cert, certificate.key):
        if not path.is_file():
            raise TlsError(f"{path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate.cert, certificate.key)
    except ssl.SSLError as error:
        raise TlsError(f"{certificate.cert}, {certificate.key}: not a certificate and its private key in PEM "
                       f"({error.reason or error})") from None
    except OSError as error:
        raise TlsError(f"{certificate.cert}: {error.strerror or error}") from None
    return context

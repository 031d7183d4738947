"""Settings: command-line flags over THEATRUM_* environment variables over embedded defaults.

Every setting is documented in the README's "Configuration" table; keep the two in step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from sessions.limits import RoomLimits
from sessions.poses import PoseLimits


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data: Path = Path("data")
    # Public base URL printed in login/invite links and QR codes (default: http(s)://host:port, with this host's LAN
    # address when listening on 0.0.0.0 or ::, so that a headset on the network can reach it).
    public_url: str = ""
    # HTTPS (WebXR needs it off localhost): a self-signed certificate made in the data folder (tls/), or a
    # hospital's certificate and key (PEM files; both given turn TLS on).
    tls: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    # Uploads: the whole request body, and a zip's total uncompressed size and compression ratio.
    max_upload_bytes: int = 2 * 1024**3
    max_unzipped_bytes: int = 8 * 1024**3
    max_zip_ratio: float = 200.0
    # Reconstruction jobs: worker processes (0 = one per core) and the bounded queue length.
    workers: int = 0
    max_queued_jobs: int = 16
    # Slices: decoded volumes kept in memory for reslicing (least recently used first out past the budget).
    volume_cache_bytes: int = 2 * 1024**3
    # CORS: comma-separated allowed origins; empty means CORS is off.
    cors_origins: tuple[str, ...] = ()
    # Several server processes: the PostgreSQL database they share (catalog, room logs, checkpoints, anchors;
    # empty = SQLite files in the data folder) and the Redis for cross-process emits and the job queue.
    database_url: str = ""
    redis_url: str = ""
    # A `theatrum worker`'s hold on a running job: it runs again this many seconds after its worker died.
    job_lease: float = 30.0
    # Reverse proxies whose X-Forwarded-For is believed (e.g. 127.0.0.1 for nginx on the same host).
    forwarded_allow_ips: tuple[str, ...] = ()
    # DICOMweb PACS: QIDO/WADO root URL, optional basic-auth user and password.
    pacs_url: str = ""
    pacs_user: str = ""
    pacs_password: str = ""
    # The DICOM receiver (C-STORE SCP): its port (0 = off), address (default: host), AE title, the callers
    # allowed (AETITLE@host entries; none = any AE title from loopback) and associations at once.
    dicom_port: int = 0
    dicom_host: str = ""
    ae_title: str = "THEATRUM"
    dicom_peers: tuple[str, ...] = ()
    dicom_max_associations: int = 4
    # Studies imported when the server starts (comma-separated paths), with their default meshes built.
    imports: tuple[str, ...] = ()
    web_client: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "web-client")
    # Rooms: invite lifetime (s); roles that get a typed room code; code redemptions per minute per address (a
    # class behind one NAT) and wrong codes per minute in all before addresses that failed must wait.
    invite_ttl: int = 86_400
    room_code_roles: tuple[str, ...] = ("student", "observer")
    join_rate: float = 60.0
    join_failures_per_minute: float = 30.0
    # Room limits (see docs/protocol.md "Limits"): participants present, annotations, label length, op size,
    # and each client's op rate (sustained per second, burst).
    room_max_participants: int = 64
    room_max_annotations: int = 2000
    room_max_label_length: int = 200
    room_max_op_bytes: int = 65_536
    room_op_rate: float = 20.0
    room_op_burst: float = 40.0
    room_max_sockets_per_participant: int = 3
    room_max_events_per_minute: int = 1200
    # Voice: open mics per room; WebRTC signals per participant (per second, burst) and their size; the ICE
    # servers (STUN/TURN) clients use, JSON in the RTCIceServer shape: empty, loopback and LAN work without.
    room_max_open_mics: int = 6
    room_signal_rate: float = 50.0
    room_signal_burst: float = 200.0
    room_max_signal_bytes: int = 16_384
    ice_servers: str = ""
    # The most bytes queued for one socket before it is dropped (a client that stopped reading).
    socket_max_queue_bytes: int = 4 * 1024**2
    # Poses: fan-out tick (Hz; 0 = no automatic tick) and avatar expiry (s). A participant still present
    # when the server stopped has `room_rejoin_grace` seconds after a restart to reconnect before their
    # leave is logged.
    # Ledger: a signed checkpoint every N events or T seconds (and at room close); anchor backends
    # (comma-separated: local, evm) and the EVM JSON-RPC endpoint and sender key.
    ledger_every_events: int = 100
    ledger_every_seconds: float = 10.0
    ledger_origin: str = ""
    ledger_anchors: tuple[str, ...] = ("local",)
    evm_rpc: str = ""
    evm_key: str = ""
    pose_tick_hz: float = 20.0
    pose_expire: float = 10.0
    room_rejoin_grace: float = 30.0

    @property
    def serves_tls(self) -> bool:
        return self.tls or bool(self.tls_cert or self.tls_key)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        from server.services.tls import reachable_host

        host = reachable_host(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.serves_tls else 'http'}://{host}:{self.port}"

    @property
    def room_limits(self) -> RoomLimits:
        return RoomLimits(max_participants=self.room_max_participants,
                          max_annotations=self.room_max_annotations,
                          max_label_length=self.room_max_label_length, max_op_bytes=self.room_max_op_bytes,
                          op_rate=self.room_op_rate, op_burst=self.room_op_burst,
                          max_sockets_per_participant=self.room_max_sockets_per_participant,
                          max_events_per_minute=self.room_max_events_per_minute,
                          max_open_mics=self.room_max_open_mics, signal_rate=self.room_signal_rate,
                          signal_burst=self.room_signal_burst, max_signal_bytes=self.room_max_signal_bytes)

    @property
    def ice_server_list(self) -> list[dict]:
        """The ICE servers as RTCIceServer dicts. Requires settings made by `from_environment` (checked)."""
        return parse_ice_servers(self.ice_servers)

    @property
    def pose_limits(self) -> PoseLimits:
        return PoseLimits(expire_s=self.pose_expire)

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


class SettingsError(ValueError):
    """A THEATRUM_* variable or flag has a value of the wrong type."""


def _coerce(name: str, raw: str, kind: type | str):
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        if kind in (bool, "bool"):
            if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError("expected 1/0, true/false, yes/no or on/off")
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in ("tuple[str, ...]",):
            return tuple(o.strip() for o in raw.split(",") if o.strip())
        return raw
    except ValueError as e:
        raise SettingsError(f"THEATRUM_{name.upper()}={raw!r}: {e}") from None


def from_environment(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``THEATRUM_<FIELD>`` variables, then explicit ``overrides`` (flags) that are not None."""
    env = os.environ if env is None else env
    values = {}
    for f in fields(Settings):
        raw = env.get(f"THEATRUM_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.name, raw, f.type)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = replace(Settings(), **values)
    parse_ice_servers(settings.ice_servers)
    return settings


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def parse_ice_servers(raw: str) -> list[dict]:
    """THEATRUM_ICE_SERVERS as a list of RTCIceServer dicts {urls, username?, credential?}; "" is none.

    Raises SettingsError naming what is wrong (not JSON, not a list of objects, a URL without a STUN/TURN scheme,
    a TURN server without its username and credential)."""
    if not raw.strip():
        return []
    try:
        servers = json.loads(raw)
    except ValueError as error:
        raise SettingsError(f"THEATRUM_ICE_SERVERS is not JSON: {error}") from None
    if isinstance(servers, dict):
        servers = [servers]
    if not isinstance(servers, list):
        raise SettingsError("THEATRUM_ICE_SERVERS must be a JSON list of RTCIceServer objects")
    result = []
    for i, server in enumerate(servers):
        where = f"THEATRUM_ICE_SERVERS[{i}]"
        if not isinstance(server, dict) or set(server) - {"urls", "username", "credential"}:
            raise SettingsError(f"{where} must be an object with urls and optionally username and credential")
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not isinstance(urls, list) or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES)
                                                             for u in urls):
            raise SettingsError(f"{where}.urls must be one or more stun:, stuns:, turn: or turns: URLs")
        entry: dict = {"urls": urls}
        for key in ("username", "credential"):
            if key in server:
                if not isinstance(server[key], str):
                    raise SettingsError(f"{where}.{key} must be a string")
                entry[key] = server[key]
        if any(u.startswith(("turn:", "turns:")) for u in urls) and not ("username" in entry and "credential" in entry):
            raise SettingsError(f"{where}: a TURN server needs a username and a credential")
        result.append(entry)
    return result

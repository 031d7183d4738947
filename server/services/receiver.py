"""The DICOM receiver: a C-STORE SCP (pynetdicom) so that a PACS or a modality can "send to VR".

`theatrum serve --dicom-port 11112 [--ae-title THEATRUM]` (or THEATRUM_DICOM_PORT; off by default) listens for
associations. Each association's instances are written, as received, to a private folder; each is checked as it
arrives (its header read, its pixels decoded: a truncated or undecodable dataset is refused with status 0xC000
and its file removed at once); when the sender releases the association, the folder goes through the same
import as an upload (server/services/imports.py: dedupe, de-identified listing) and the lobby is told. An
aborted association imports nothing, and neither does one past `max_bytes`.

Who may send: `peers` lists `AETITLE@host` entries (host an IP address or a name resolved at start); an
association whose calling AE title and address match no entry is rejected (A-ASSOCIATE-RJ, "calling AE title
not recognised"). Without peers, any AE title may send from the loopback interface only. At most
`max_associations` at once; C-ECHO is answered. Accepted, in any transfer syntax: the image storage SOP classes
that can make a volume (CT, MR, PET, NM, RT Dose, and their enhanced forms), and the segmentations of such
images (Segmentation Storage, RT Structure Set Storage: docs/structures.md), with their images or after them. A
segmentation is read whole as it arrives (a damaged one is refused like a truncated image); at the release it is
matched to its study's series as an upload would be, and one that fits none imports nothing of the association.

Privacy: nothing identifying is logged: a line per association names the calling AE title, the peer address,
the instance count and the pseudonymous study ids; pynetdicom's own logger is held at WARNING (at INFO and
DEBUG it would print the datasets it receives).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom import sop_class as sop
from pynetdicom.transport import ThreadedAssociationServer

from reconstruction.dicom_seg import read_seg
from reconstruction.errors import ReconstructionError
from reconstruction.instance import read_instance
from reconstruction.pixels import decode_stored
from reconstruction.rtstruct import read_rtstruct
from reconstruction.segmentation import RT_STRUCTURE_SET_STORAGE, SEGMENTATION_STORAGE
from reconstruction.sources import FileRef, Skipped
from server.services.errors import ServiceError
from server.services.imports import Library, import_folder

log = logging.getLogger("theatrum.dicom")

DEFAULT_AE_TITLE = "THEATRUM"
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
VOLUME_SOP_CLASSES = (
    sop.CTImageStorage, sop.EnhancedCTImageStorage, sop.LegacyConvertedEnhancedCTImageStorage,
    sop.MRImageStorage, sop.EnhancedMRImageStorage, sop.LegacyConvertedEnhancedMRImageStorage,
    sop.PositronEmissionTomographyImageStorage, sop.EnhancedPETImageStorage,
    sop.LegacyConvertedEnhancedPETImageStorage, sop.NuclearMedicineImageStorage, sop.RTDoseStorage,
)
SEGMENTATION_SOP_CLASSES = (sop.SegmentationStorage, sop.RTStructureSetStorage)
# A-ASSOCIATE-RJ: rejected-permanent, by the service user, "calling AE title not recognised".
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


class PeerError(ValueError):
    """A THEATRUM_DICOM_PEERS entry is not AETITLE@host."""


class DicomPortError(OSError):
    """The receiver cannot listen on its port."""


@dataclass(frozen=True)
class Peer:
    """A caller allowed to send: its AE title and the addresses its host resolves to."""

    ae_title: str
    addresses: frozenset[str]


def parse_peers(entries: tuple[str, ...]) -> tuple[Peer, ...]:
    """The peers of THEATRUM_DICOM_PEERS entries `AETITLE@host`. Raises PeerError naming a bad entry."""
    peers = []
    for entry in entries:
        title, at, host = entry.partition("@")
        title = title.strip()
        if not at or not title or len(title) > 16 or not host.strip() or "\\" in title:
            raise PeerError(f"DICOM peer {entry!r} is not AETITLE@host (an AE title of 1-16 characters)")
        try:
            infos = socket.getaddrinfo(host.strip(), None, proto=socket.IPPROTO_TCP)
        except OSError as error:
            raise PeerError(f"DICOM peer {entry!r}: host {host!r} does not resolve ({error})") from None
        peers.append(Peer(title, frozenset(str(ipaddress.ip_address(info[4][0])) for info in infos)))
    return tuple(peers)


def allowed(peers: tuple[Peer, ...], ae_title: str, address: str) -> bool:
    """Whether a caller with `ae_title` at `address` may send: a peer entry matches both, or without entries,
    the address is loopback."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not peers:
        return ip.is_loopback
    return any(peer.ae_title == ae_title.strip() and str(ip) in peer.addresses for peer in peers)


@dataclass
class _Reception:
    """What one association has delivered so far: its folder, instance count and bytes."""

    folder: Path
    calling: str
    address: str
    instances: int = 0
    bytes: int = 0
    refused: int = 0
    over_limit: bool = False


@dataclass
class DicomReceiver:
    """The C-STORE SCP over a library. `on_imported(result)` runs after each import (in the association's
    thread); `start` binds the port, `stop` closes it."""

    library: Library
    host: str
    port: int
    ae_title: str = DEFAULT_AE_TITLE
    peers: tuple[Peer, ...] = ()
    max_associations: int = 4
    max_bytes: int = 2 * 1024**3
    tmp: Path | None = None
    on_imported: Callable[[dict], None] | None = None
    _server: ThreadedAssociationServer | None = None
    _receptions: dict[int, _Reception] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Listen on host:port. Raises OSError if the port cannot be bound."""
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG lines dump datasets
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, 60, 60
        for uid in VOLUME_SOP_CLASSES + SEGMENTATION_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(sop.Verification)
        handlers = [(evt.EVT_REQUESTED, self._requested), (evt.EVT_C_STORE, self._store),
                    (evt.EVT_C_ECHO, lambda event: SUCCESS), (evt.EVT_RELEASED, self._released),
                    (evt.EVT_ABORTED, self._discard), (evt.EVT_CONN_CLOSE, self._discard)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = self._server.server_address[1]
        log.info("DICOM receiver %s listening on %s:%d (%s)", self.ae_title, self.host, self.port,
                 f"{len(self.peers)} allowed peer(s)" if self.peers else "any AE title from loopback only")

    def stop(self) -> None:
        """Stop listening and drop what unfinished associations received."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            receptions, self._receptions = list(self._receptions.values()), {}
        for reception in receptions:
            shutil.rmtree(reception.folder, ignore_errors=True)

    # ---- events (each in its association's thread) ----------------------------------------------------

    def _requested(self, event: evt.Event) -> None:
        """Reject a caller that is not allowed, before anything is negotiated."""
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = assoc.requestor.address
        if not allowed(self.peers, calling, address):
            log.warning("DICOM association from %s at %s rejected: not an allowed peer", calling, address)
            assoc.acse.send_reject(*REJECT_CALLING_AE)
            assoc.kill()  # as pynetdicom's own rejections do: the DUL sends the A-ASSOCIATE-RJ before it stops
            return
        folder = Path(tempfile.mkdtemp(prefix="dicom-", dir=self.tmp))
        with self._lock:
            self._receptions[id(assoc)] = _Reception(folder, calling, address)

    def _store(self, event: evt.Event) -> int:
        """Write the instance as received, check it, keep it or refuse it."""
        reception = self._receptions.get(id(event.assoc))
        if reception is None:
            return OUT_OF_RESOURCES
        data = event.request.DataSet.getvalue()
        reception.bytes += len(data)
        if reception.over_limit or reception.bytes > self.max_bytes:
            reception.over_limit = True
            return OUT_OF_RESOURCES
        path = reception.folder / f"{reception.instances + reception.refused + 1:06d}.dcm"
        with open(path, "wb") as out:
            out.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(out, event.file_meta, enforce_standard=True)
            out.write(data)
        problem = _problem(path, str(event.request.AffectedSOPClassUID), self.library.max_inflated_bytes)
        if problem is not None:
            path.unlink(missing_ok=True)
            reception.refused += 1
            log.warning("DICOM instance from %s refused: %s", reception.calling, problem.replace(str(path), "it"))
            return CANNOT_UNDERSTAND
        reception.instances += 1
        return SUCCESS

    def _released(self, event: evt.Event) -> None:
        """The sender is done: import what it sent."""
        with self._lock:
            reception = self._receptions.pop(id(event.assoc), None)
        if reception is None:
            return
        try:
            if reception.over_limit:
                log.warning("DICOM association from %s sent more than %d bytes: nothing imported",
                            reception.calling, self.max_bytes)
            elif reception.instances:
                self._import(reception)
        finally:
            shutil.rmtree(reception.folder, ignore_errors=True)

    def _import(self, reception: _Reception) -> None:
        try:
            result = import_folder(self.library, reception.folder)
        except ServiceError as error:
            log.warning("DICOM association from %s at %s: %d instance(s) not imported: %s", reception.calling,
                        reception.address, reception.instances, error.code)
            return
        studies = ", ".join(s["study_id"] for s in result["studies"])
        log.info("DICOM association from %s at %s: %d instance(s) received, %d added to study %s",
                 reception.calling, reception.address, reception.instances, result["instances"]["added"], studies)
        if self.on_imported is not None:
            with contextlib.suppress(Exception):
                self.on_imported(result)

    def _discard(self, event: evt.Event) -> None:
        """An association that ends without a release (aborted, connection lost) imports nothing."""
        with self._lock:
            reception = self._receptions.pop(id(event.assoc), None)
        if reception is not None:
            shutil.rmtree(reception.folder, ignore_errors=True)


def _problem(path: Path, sop_class: str, max_inflated_bytes: int) -> str | None:
    """Why a received file cannot be imported (unreadable header, no pixels, truncated or undecodable
    pixels, a segmentation that cannot be read), or None. ``sop_class`` is the C-STORE's affected SOP class
    (one of the negotiated ones), so the file is read once, by the reader its class calls for."""
    ref = FileRef(path)
    if sop_class in (SEGMENTATION_STORAGE, RT_STRUCTURE_SET_STORAGE):
        try:
            (read_seg if sop_class == SEGMENTATION_STORAGE else read_rtstruct)(ref)
        except ReconstructionError as error:
            return error.problem
        return None
    instance = read_instance(ref, max_inflated_bytes=max_inflated_bytes)
    if isinstance(instance, Skipped):
        return instance.reason
    try:
        decode_stored(instance)  # checks the declared size first, then reads and decodes every byte
    except ReconstructionError as error:
        return error.problem
    return None


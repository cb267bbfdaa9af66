"""Helpers of the audit service tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from pathlib import Path

from pacs.events.v1 import audit_events_pb2 as audit_pb
from pacs_audit.syslog import BOM
from pacs_audit.xml_message import schema_path
from pacs_common import audit_events, pki
from pacs_common.local import free_port


def sample_event(patient: str = "PAT-1", tenant: str = "t1") -> audit_pb.AuditEvent:
    """A Query-by-C-FIND-like event with an id, time and participants."""
    event = audit_events.dicom_instances_stored(
        _Caller(tenant),
        "CLOUDPACS",
        study_instance_uid="1.2.3.4",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        part10=b"",
        ok=True,
    )
    assert event is not None
    event.id = str(uuid.uuid4())
    event.event_time = "2026-11-30T12:00:00.000Z"
    event.patient_id = patient
    event.source = "gateway"
    return event


class _Caller:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.calling_ae_title = "MODALITY"
        self.address = "127.0.0.1"
        self.user: str | None = None


RSYSLOG_CONF = """
global(
  workDirectory="{work}"
  maxMessageSize="64k"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}")
template(name="fields" type="string" string="%pri%|%app-name%|%msgid%|%msg%\\n")
action(type="omfile" file="{out}" template="fields")
"""


class Collector:
    """Debian's rsyslogd with its GnuTLS driver, receiving RFC 5425 syslog on loopback, with a
    certificate from a CA of its own (``pacs_common.pki``); what it receives goes to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        pki_dir = directory / "pki"
        ca = pki.ensure_ca(pki_dir)
        identity = pki.issue(pki_dir, "collector", ca)
        self.ca_file = pki.ca_files(pki_dir)[0]
        self.out = directory / "received.log"
        (directory / "work").mkdir(exist_ok=True)
        self.conf = directory / "rsyslog.conf"
        self.conf.write_text(
            RSYSLOG_CONF.format(
                work=directory / "work",
                ca=self.ca_file,
                cert=identity.cert_file,
                key=identity.key_file,
                port=self.port,
                out=self.out,
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start rsyslogd and wait until it listens."""
        self._process = subprocess.Popen(
            ["/usr/sbin/rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.directory / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            assert self._process.poll() is None, "rsyslogd exited"
            time.sleep(0.1)
        raise TimeoutError("rsyslogd did not listen")

    def stop(self) -> None:
        """Stop rsyslogd (it flushes its output file)."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(30)

    def messages(self) -> list[tuple[str, str, str, bytes]]:
        """(PRI, APP-NAME, MSGID, MSG) of every message received so far."""
        if not self.out.exists():
            return []
        received = []
        for line in self.out.read_bytes().splitlines():
            pri, app, msgid, msg = line.split(b"|", 3)
            received.append((pri.decode(), app.decode(), msgid.decode(), msg.removeprefix(BOM)))
        return received

    def wait_for(self, count: int, timeout_s: float = 60) -> list[tuple[str, str, str, bytes]]:
        """The messages once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received = self.messages()
            if len(received) >= count:
                return received
            time.sleep(0.2)
        raise AssertionError(f"the collector has {len(self.messages())} of {count} messages")


def schema_errors(xml: bytes, directory: Path) -> str:
    """xmllint's complaints about ``xml`` against the PS3.15 A.5.1 schema ('' when valid)."""
    path = directory / f"{uuid.uuid4().hex}.xml"
    path.write_bytes(xml)
    result = subprocess.run(
        ["/usr/bin/xmllint", "--noout", "--relaxng", schema_path(), str(path)],
        capture_output=True,
        check=False,
    )
    return "" if result.returncode == 0 else result.stderr.decode()

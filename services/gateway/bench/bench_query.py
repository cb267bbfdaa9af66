"""Study-level C-FIND latency at scale: cloudpacs (indexer on PostgreSQL) versus Orthanc with
its SQLite index and with its PostgreSQL index plugin, on the same studies (issue 11's goal).

``--studies`` one-instance studies (64x64 16-bit images, modalities CT/MR/CR/US) with seeded,
varied patient data are generated once (cached under ``.cache/bench/query``): about one
patient per three studies, names ``FAMILY^GIVEN`` from 400 generated family names, a unique
AccessionNumber per study, StudyDate over five years. Each target in turn is started, loaded,
queried and stopped, so the targets never compete for the two cores:

* **load**: the files go over DIMSE with DCMTK ``storescu``, eight parallel associations
  (:func:`bench_ingest.send`); measured from the first connection to the last C-STORE
  response, and until a study-level C-FIND lists every study (cloudpacs indexes from Kafka
  after the C-STORE Success). CPU is summed over the target's processes (cloudpacs: its
  services plus the shared S3 server and Kafka, which other work on the machine also uses).
* **queries**: ``--queries`` study-level C-FINDs per kind (Study Root FIND, PS3.4 C.6.2),
  each over a new pynetdicom association (associate, one C-FIND, release), timed from the
  association request to the end of the release, with the return keys a study list asks for.
  The match values are drawn (seeded) from the generated studies, the same for every target;
  one unmeasured query of each kind runs first. The client socket has TCP_NODELAY, as both
  servers' sockets do (otherwise each C-FIND waits 40 ms for a delayed ACK). A C-ECHO over a
  new association is timed the same way: the floor of the association itself (pynetdicom's
  release alone waits in 10 ms steps for its reader thread). The JSON also holds each query's
  time to its final response, before the release.

Every C-FIND must end with Success and return exactly as many matches as the generated data
holds; the run fails naming the query otherwise. Neither server caps a study-level answer here:
Orthanc's ``LimitFindResults`` is 0 (no limit) by default, and the cloudpacs gateway pages
through the index (``PACS_GATEWAY_FIND_PAGE_SIZE``, 500 a page) instead of applying the
indexer's ``max_results``. Orthanc runs with its defaults, so it reads each matched study's
file to build the answer (``StorageAccessOnFind: Always``).

What bounds the figures: the p50 of one kind includes the client (pynetdicom decodes every
pending response, so a kind with many matches costs the client more) and the association set-up
and release (the C-ECHO row); the machine's load from other work shows in the load average
printed at the start and the end.

    uv run python services/gateway/bench/bench_query.py [--studies 100000] [--queries 50]
        [--targets cloudpacs,orthanc,orthanc-pg] [--json FILE]
    (needs infra/up.sh, DCMTK, Orthanc and orthanc-postgresql)
"""

from __future__ import annotations

import argparse
import calendar
import collections
import json
import os
import random
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from bench_ingest import (
    ORTHANC_PG_PLUGIN,
    REPO,
    CloudpacsTarget,
    OrthancTarget,
    drop_bucket,
    http_json,
    s3_client,
    send,
)
from cpu_meter import CLIENT, CpuMeter
from pacs_common.local import load_infra_env
from pacs_testkit.postgres import DEFAULT_URL, scratch_database
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    UltrasoundImageStorage,
    Verification,
)
from rich.console import Console
from rich.table import Table

CACHE = REPO / ".cache" / "bench" / "query"
GENERATOR_VERSION = 1  # bump when the generated files change
SEED = 20240611
ASSOCIATIONS = 8
SIDE = 64
MODALITIES = {  # modality: (SOP class, share of studies, study descriptions)
    "CT": (CTImageStorage, 0.4, ("CT HEAD", "CT CHEST", "CT ABDOMEN PELVIS")),
    "MR": (MRImageStorage, 0.3, ("MR BRAIN", "MR KNEE", "MR LUMBAR SPINE")),
    "CR": (ComputedRadiographyImageStorage, 0.2, ("CR CHEST PA", "CR HAND")),
    "US": (UltrasoundImageStorage, 0.1, ("US ABDOMEN", "US THYROID")),
}
# Word lists read better as words than as quoted items.
ONSETS = "B BR C CH D F G GR H J K KR L M N P R S SCH SH ST T TR V W Z".split()  # noqa: SIM905
VOWELS = "A E I O U AI EA OU".split()  # noqa: SIM905
CODAS = ["", "L", "N", "R", "S", "T", "RD", "LL", "NN", "RT"]
ENDINGS = "SON MAN LEY TON FORD BERG WOOD ER INI OV SKI EZ AN ELL ING".split()  # noqa: SIM905
GIVEN = (  # noqa: SIM905
    "ANNA CLARA DAVID ELENA EMMA HUGO JAMES JULIA LAURA LIAM LUCAS MARIA MARK NOAH OLIVIA "
    "PAUL PETER SARAH SOPHIE THOMAS"
).split()
FIRST_DAY = date(2020, 1, 1)
DAYS = 5 * 365
RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyInstanceUID",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedInstances",
)
ECHO = "C-ECHO (association only)"
PENDING = (0xFF00, 0xFF01)
console = Console(width=max(Console().width, 160))  # the query table is wide


@dataclass(frozen=True)
class Study:
    """The attributes of one generated study that queries match on."""

    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    modality: str


@dataclass
class Query:
    """One C-FIND: its kind, matching keys, and the number of matches the data holds."""

    kind: str
    match: dict[str, str]
    expected: int


@dataclass
class Load:
    """Loading one target."""

    target: str
    studies: int
    seconds: float
    findable_seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def server_cpu_ms(self) -> float:
        """CPU milliseconds per study of the target's processes (not storescu)."""
        server = sum(s for name, s in self.cpu_seconds.items() if name != CLIENT)
        return 1000 * server / self.studies


@dataclass
class Timing:
    """One measured query."""

    match: dict[str, str]
    seconds: float
    """From the association request to the end of its release."""
    answered_seconds: float
    """From the association request to the final C-FIND (or C-ECHO) response."""
    matches: int


# --------------------------------------------------------------------------------------------
# Data


def plan_studies(count: int, seed: int) -> list[Study]:
    """``count`` studies of about ``count / 3`` patients (deterministic for ``seed``)."""
    rng = random.Random(seed)  # noqa: S311  (synthetic data, not security)
    families: set[str] = set()
    while len(families) < 400:
        families.add("".join(rng.choice(part) for part in (ONSETS, VOWELS, CODAS, ENDINGS)))
    family_names = sorted(families)
    # Mildly skewed like real surnames, so some prefixes match more studies than others.
    weights = [1 / (rank + 50) for rank in range(len(family_names))]
    patient_count = max(count // 3, 1)
    patients = [
        (f"{number:08d}", f"{family}^{rng.choice(GIVEN)}")
        for number, family in zip(
            rng.sample(range(10_000_000, 100_000_000), patient_count),
            rng.choices(family_names, weights, k=patient_count),
            strict=True,
        )
    ]
    accessions = rng.sample(range(100_000_000, 1_000_000_000), count)
    modalities = rng.choices(list(MODALITIES), [m[1] for m in MODALITIES.values()], k=count)
    studies = []
    for accession, modality in zip(accessions, modalities, strict=True):
        patient_id, name = rng.choice(patients)
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        studies.append(Study(patient_id, name, f"A{accession}", f"{day:%Y%m%d}", modality))
    return studies


def template() -> Dataset:
    """A minimal 64x64 16-bit image whose study and patient attributes are set per study."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstitutionName = "BENCH HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^BENCH"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(SEED).integers(0, 4096, (SIDE, SIDE), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def generate(studies: list[Study], seed: int) -> list[Path]:
    """One file per study (cached: generated once per count and seed).

    The same Dataset is rewritten for every study: copying a template per file costs more than
    writing it.
    """
    folder = CACHE / f"studies-{len(studies)}-s{seed}-v{GENERATOR_VERSION}"
    files = [folder / f"{i:06d}.dcm" for i in range(len(studies))]
    if (folder / "complete").exists():
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)  # noqa: S311  (synthetic data, not security)
    ds = template()
    started = last = time.monotonic()
    for index, (study, path) in enumerate(zip(studies, files, strict=True)):
        sop_class, _, descriptions = MODALITIES[study.modality]
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.PatientID, ds.PatientName = study.patient_id, study.patient_name
        born = int(study.patient_id)  # the same for every study of the patient
        ds.PatientBirthDate = f"{1930 + born % 90}{1 + born % 12:02d}{1 + born % 28:02d}"
        ds.PatientSex = "MF"[born % 2]
        ds.AccessionNumber, ds.StudyID = study.accession, study.accession[-6:]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
        ds.StudyTime = ds.SeriesTime = (
            f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        )
        ds.Modality = study.modality
        ds.StudyDescription = ds.SeriesDescription = rng.choice(descriptions)
        ds.save_as(path, enforce_file_format=True)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            console.print(f"  generated {index + 1:,}/{len(files):,} files")
    (folder / "complete").write_text("ok\n")
    console.print(f"generated {len(files):,} studies in {time.monotonic() - started:.0f}s")
    return files


def plan_queries(studies: list[Study], per_kind: int, seed: int) -> dict[str, list[Query]]:
    """Per kind, one warm-up query then ``per_kind`` measured ones, values from the data."""
    by_patient = collections.Counter(s.patient_id for s in studies)
    by_prefix = collections.Counter(s.patient_name[:3] for s in studies)
    by_date = collections.Counter(s.study_date for s in studies)
    by_month = collections.Counter((s.study_date[:6], s.modality) for s in studies)
    rng = random.Random(seed + 1)  # noqa: S311  (query values)
    queries: dict[str, list[Query]] = collections.defaultdict(list)
    for _ in range(per_kind + 1):
        s = rng.choice(studies)
        queries["PatientID"].append(
            Query("PatientID", {"PatientID": s.patient_id}, by_patient[s.patient_id])
        )
        s = rng.choice(studies)
        queries["AccessionNumber"].append(
            Query("AccessionNumber", {"AccessionNumber": s.accession}, 1)
        )
        prefix = rng.choice(studies).patient_name[:3]
        queries["PatientName prefix"].append(
            Query("PatientName prefix", {"PatientName": f"{prefix}*"}, by_prefix[prefix])
        )
        day = rng.choice(studies).study_date
        queries["StudyDate one day"].append(
            Query("StudyDate one day", {"StudyDate": day}, by_date[day])
        )
        month = rng.choice(studies).study_date[:6]
        last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
        match = {"StudyDate": f"{month}01-{month}{last:02d}", "ModalitiesInStudy": "CT"}
        queries["StudyDate month + CT"].append(
            Query("StudyDate month + CT", match, by_month[(month, "CT")])
        )
        queries[ECHO].append(Query(ECHO, {}, 0))
    return dict(queries)


# --------------------------------------------------------------------------------------------
# Queries


def identifier(match: dict[str, str]) -> Dataset:
    """A study-level identifier: the matching keys plus empty return keys (PS3.4 C.4.1.1.3)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, match.get(keyword, ""))
    return ds


def _nodelay(event: Any) -> None:
    """Disable Nagle on the client socket: pynetdicom writes a C-FIND request as two PDUs, and
    the second would wait for the server's delayed ACK (40 ms on Linux) before leaving."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def timed(ae: AE, port: int, called_ae: str, query: Query) -> Timing:
    """One query over a new association, timed from A-ASSOCIATE to the end of A-RELEASE.

    Raises:
        RuntimeError: the association was refused or the C-FIND did not end with Success.
    """
    started = time.perf_counter()
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)]
    )
    if not assoc.is_established:
        raise RuntimeError(f"association to {called_ae} refused")
    matches, final = 0, -1
    try:
        if query.kind == ECHO:
            status = assoc.send_c_echo()
            final = int(status.Status) if status else -1
        else:
            model = StudyRootQueryRetrieveInformationModelFind
            for status, found in assoc.send_c_find(identifier(query.match), model):
                if not status:
                    raise RuntimeError(f"{called_ae}: no C-FIND response (timeout or abort)")
                if status.Status in PENDING and found is not None:
                    matches += 1
                else:
                    final = int(status.Status)
        answered = time.perf_counter() - started
    finally:
        assoc.release()
    seconds = time.perf_counter() - started
    if final != 0:
        raise RuntimeError(f"{called_ae}: {query.kind} {query.match} ended with 0x{final:04X}")
    return Timing(query.match, seconds, answered, matches)


def run_queries(
    port: int, called_ae: str, queries: dict[str, list[Query]], mismatches: list[str], name: str
) -> dict[str, list[Timing]]:
    """Every query of every kind against one target; wrong match counts go to
    ``mismatches``."""
    ae = AE(ae_title="BENCHQUERY")
    ae.dimse_timeout = 300  # a broad query on a slow target must not abort the association
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    results: dict[str, list[Timing]] = {}
    for kind, batch in queries.items():
        warm_up, *measured = batch
        timed(ae, port, called_ae, warm_up)
        results[kind] = [timed(ae, port, called_ae, query) for query in measured]
        for query, timing in zip(measured, results[kind], strict=True):
            if timing.matches != query.expected:
                mismatches.append(
                    f"{name}: {kind} {query.match} returned {timing.matches} matches,"
                    f" the data holds {query.expected}"
                )
        p50 = 1000 * float(np.percentile([t.seconds for t in results[kind]], 50))
        console.print(f"  {name}: {kind}: p50 {p50:.1f} ms over {len(measured)} queries")
    return results


# --------------------------------------------------------------------------------------------
# Targets


@contextmanager
def progress(
    name: str, total: int, count: Callable[[], int], every_s: float = 10
) -> Iterator[None]:
    """A line every ``every_s`` seconds with ``count()`` (studies stored or indexed so far)."""
    stop = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not stop.wait(every_s):
            try:
                done = count()
            except Exception as exc:  # progress is informative only; the load goes on
                console.print(f"  {name}: progress unavailable ({exc})")
                continue
            elapsed = time.monotonic() - started
            console.print(
                f"  {name}: {done:,}/{total:,} studies after {elapsed:.0f}s"
                f" ({done / elapsed:.1f}/s)"
            )

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def findable_timeout(count: int) -> float:
    """How long the load may take to become findable after the last C-STORE."""
    return max(300.0, count / 50)


def measure_orthanc(
    files: list[Path],
    queries: dict[str, list[Query]],
    mismatches: list[str],
    postgres_url: str | None = None,
) -> tuple[Load, dict[str, list[Timing]]]:
    """Load and query Orthanc (SQLite index, or PostgreSQL with ``postgres_url``)."""
    name = "orthanc (postgresql)" if postgres_url else "orthanc (sqlite)"
    with OrthancTarget(postgres_url) as target:
        assert target.process is not None
        statistics_url = f"http://127.0.0.1:{target.http_port}/statistics"
        with progress(name, len(files), lambda: int(http_json(statistics_url)["CountStudies"])):
            seconds, findable, cpu = send(
                files,
                target.dicom_port,
                "ORTHANC",
                ASSOCIATIONS,
                CpuMeter({"Orthanc": target.process.pid}),
                findable_timeout_s=findable_timeout(len(files)),
            )
        target.verify(len(files))
        load = Load(name, len(files), seconds, findable, cpu)
        console.print(describe(load))
        return load, run_queries(target.dicom_port, "ORTHANC", queries, mismatches, name)


def measure_cloudpacs(
    files: list[Path], queries: dict[str, list[Query]], mismatches: list[str], postgres_url: str
) -> tuple[Load, dict[str, list[Timing]]]:
    """Load and query a cloudpacs stack whose indexer uses a fresh PostgreSQL database."""
    name = "cloudpacs"
    client = s3_client()
    with scratch_database(postgres_url, prefix="bench_query") as url:
        target = CloudpacsTarget(os.cpu_count() or 1, env={"PACS_INDEXER_DATABASE_URL": url})
        engine = sa.create_engine(url)

        def indexed() -> int:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM studies")).scalar_one())

        try:
            with target:
                with progress(name, len(files), indexed):
                    seconds, findable, cpu = send(
                        files,
                        target.dicom_port,
                        "CLOUDPACS",
                        ASSOCIATIONS,
                        target.cpu_meter(),
                        findable_timeout_s=findable_timeout(len(files)),
                    )
                target.verify(client, len(files))
                load = Load(name, len(files), seconds, findable, cpu)
                console.print(describe(load))
                timings = run_queries(target.dicom_port, "CLOUDPACS", queries, mismatches, name)
        finally:
            engine.dispose()
            drop_bucket(client, target.bucket)
    return load, timings


# --------------------------------------------------------------------------------------------
# Report


def describe(load: Load) -> str:
    return (
        f"{load.target}: {load.studies:,} studies stored in {load.seconds:.1f}s"
        f" ({load.studies / load.seconds:.1f}/s), all findable after {load.findable_seconds:.1f}s"
    )


def print_load_table(loads: list[Load]) -> None:
    table = Table(
        title=f"C-STORE load, storescu x {ASSOCIATIONS} associations, one-instance studies"
    )
    for column in (
        "target",
        "studies",
        "stored s",
        "stored/s",
        "findable s",
        "findable/s",
        "server CPU ms/study",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for load in loads:
        table.add_row(
            load.target,
            f"{load.studies:,}",
            f"{load.seconds:.1f}",
            f"{load.studies / load.seconds:.1f}",
            f"{load.findable_seconds:.1f}",
            f"{load.studies / load.findable_seconds:.1f}",
            f"{load.server_cpu_ms:.1f}",
        )
    console.print(table)


def percentile_ms(timings: list[Timing], q: float, answered: bool = False) -> float:
    return 1000 * float(
        np.percentile([t.answered_seconds if answered else t.seconds for t in timings], q)
    )


def print_query_table(
    results: dict[str, dict[str, list[Timing]]],
    queries: dict[str, list[Query]],
    studies: int,
    answered: bool = False,
) -> None:
    """One table of p50 / p95 per kind and target: the whole association (``answered``
    False), or until the final response, before the release."""
    targets = list(results)
    per_kind = len(next(iter(queries.values()))) - 1
    span = "until the final response" if answered else "association request to release"
    table = Table(
        title=f"Study-level C-FIND over a new association each, {studies:,} studies,"
        f" {per_kind} queries per kind, {span}: p50 / p95 ms"
    )
    table.add_column("kind", no_wrap=True)
    table.add_column("matches (median)", justify="right")
    for target in targets:
        table.add_column(target, justify="right")
    orthancs = [t for t in targets if t.startswith("orthanc")]
    if "cloudpacs" in results:
        for target in orthancs:
            table.add_column(f"p50 cloudpacs ÷ {target}", justify="right")
    for kind, batch in queries.items():
        row = [kind, f"{np.median([q.expected for q in batch[1:]]):g}"]
        for target in targets:
            timings = results[target][kind]
            p50, p95 = (percentile_ms(timings, q, answered) for q in (50, 95))
            row.append(f"{p50:.1f} / {p95:.1f}")
        if "cloudpacs" in results:
            ours = percentile_ms(results["cloudpacs"][kind], 50, answered)
            row += [f"{ours / percentile_ms(results[t][kind], 50, answered):.3f}" for t in orthancs]
        table.add_row(*row)
    console.print(table)


# --------------------------------------------------------------------------------------------
# Main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100_000, help="one-instance studies")
    parser.add_argument("--queries", type=int, default=50, help="measured queries per kind")
    parser.add_argument(
        "--targets", default="orthanc,orthanc-pg,cloudpacs", help="comma-separated, in order"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    for key, value in load_infra_env().items():  # S3, Kafka and PostgreSQL of infra/up.sh
        os.environ.setdefault(key, value)
    postgres_url = os.environ.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    console.print(f"load average at start: {os.getloadavg()} ({os.cpu_count()} cores)")

    studies = plan_studies(args.studies, args.seed)
    files = generate(studies, args.seed)
    queries = plan_queries(studies, args.queries, args.seed)
    runs: dict[str, Callable[[list[str]], tuple[Load, dict[str, list[Timing]]]]] = {
        "orthanc": lambda m: measure_orthanc(files, queries, m),
        "orthanc-pg": lambda m: measure_orthanc(files, queries, m, postgres_url),
        "cloudpacs": lambda m: measure_cloudpacs(files, queries, m, postgres_url),
    }
    loads: list[Load] = []
    results: dict[str, dict[str, list[Timing]]] = {}
    mismatches: list[str] = []
    for key in args.targets.split(","):
        if key == "orthanc-pg" and not Path(ORTHANC_PG_PLUGIN).exists():
            console.print(f"[yellow]skipping orthanc-pg: no {ORTHANC_PG_PLUGIN}[/yellow]")
            continue
        load, timings = runs[key](mismatches)
        loads.append(load)
        results[load.target] = timings

    print_load_table(loads)
    print_query_table(results, queries, args.studies)
    print_query_table(results, queries, args.studies, answered=True)
    console.print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(report(args, loads, results, queries), indent=2))
    if mismatches:
        console.print(f"[red]FAIL: {len(mismatches)} queries returned the wrong count[/red]")
        for line in mismatches[:20]:
            console.print(f"  {line}")
        return 1
    return 0


def report(
    args: argparse.Namespace,
    loads: list[Load],
    results: dict[str, dict[str, list[Timing]]],
    queries: dict[str, list[Query]],
) -> dict[str, Any]:
    """The raw results: every load and every measured query's time and match count."""
    return {
        "studies": args.studies,
        "queries_per_kind": args.queries,
        "seed": args.seed,
        "loads": [asdict(load) | {"server_cpu_ms_per_study": load.server_cpu_ms} for load in loads],
        "queries": {
            target: {
                kind: [
                    asdict(t) | {"expected": q.expected}
                    for t, q in zip(timings, queries[kind][1:], strict=True)
                ]
                for kind, timings in by_kind.items()
            }
            for target, by_kind in results.items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())

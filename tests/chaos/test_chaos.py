"""Chaos: ``kill -9`` of every service, the Kafka broker, the S3 server and PostgreSQL (the
indexer on PostgreSQL) while instances are sent over several associations. Afterwards every
acknowledged instance is found by C-FIND, exactly once, and stored bit-exact.

The senders behave as a modality should: an instance is sent until acknowledged (a refusal,
an abort or a lost connection means the same instance again on a new association). What the
gateway promises is that an acknowledgement means durable: nothing acknowledged is lost.

Size: ``PACS_CHAOS_INSTANCES`` (48 in CI; ``make chaos`` sends 1 000) over four associations.
The faults run one after another while the senders work; each restarted part must be ready
again before the next fault.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from pacs_testkit.postgres import DEFAULT_URL, scratch_database

from tests.chaos.chaos_support import (
    Ledger,
    check_everything_acknowledged,
    join_senders,
    kill_infra,
    kill_service,
    run_senders,
    synthetic_instances,
)
from tests.e2e.e2e_support import RunningStack, running_stack

pytestmark = pytest.mark.e2e

INSTANCES = int(os.environ.get("PACS_CHAOS_INSTANCES", "48"))
ASSOCIATIONS = 4
FAULTS = ["storage", "indexer", "gateway", "kafka", "s3", "postgres"]


@pytest.fixture(scope="module")
def chaos_stack(
    infra_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    url = infra_env.get("PACS_TEST_POSTGRES_URL", DEFAULT_URL)
    with (
        scratch_database(url, prefix="chaos") as database_url,
        running_stack(
            infra_env,
            tmp_path_factory.mktemp("chaos"),
            {"PACS_INDEXER_DATABASE_URL": database_url, "PACS_GATEWAY_WORKERS": "2"},
        ) as stack,
    ):
        yield stack


@pytest.mark.timeout(1800)  # six restarts of servers on a loaded machine
def test_nothing_acknowledged_is_lost_or_duplicated_through_kill_9(
    chaos_stack: RunningStack,
) -> None:
    instances = synthetic_instances(INSTANCES)
    ledger = Ledger()
    senders = run_senders(
        chaos_stack.dicom_port, instances, ASSOCIATIONS, ledger, within_s=INSTANCES * 3 + 600
    )
    done: list[str] = []

    def faults() -> None:
        for index, fault in enumerate(FAULTS):
            # spread the faults over the ingest: wait until a share of it was acknowledged
            share = (index + 1) * len(instances) // (len(FAULTS) + 2)
            while len(ledger.acknowledged) < share and any(s.is_alive() for s in senders):
                time.sleep(0.1)
            if fault in ("kafka", "s3", "postgres"):
                kill_infra(fault)
            else:
                kill_service(chaos_stack, fault)
            done.append(fault)

    chaos = threading.Thread(target=faults, daemon=True)
    chaos.start()
    chaos.join(INSTANCES * 3 + 900)
    join_senders(senders, INSTANCES * 3 + 600)
    assert done == FAULTS
    assert len(ledger.acknowledged) == len(instances)
    check_everything_acknowledged(chaos_stack, ledger, within_s=300)
    print(  # the figures of the run, in the log
        f"\nchaos: {len(instances)} instances over {ASSOCIATIONS} associations, faults "
        f"{', '.join(done)}; {ledger.failures} refused or failed attempts retried"
    )

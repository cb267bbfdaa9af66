"""DICOM User Identity negotiation with a JWT (PS3.7 D.3.3.7), against tokens of the real hydra.

The gateway runs with storage and the indexer on closed ports: a C-FIND that passes the role
check then fails upstream with A700 (out of resources), one that does not is refused with
0x0124 (Not Authorized) before anything is asked upstream, so the two are told apart without
the rest of the stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pacs_common.auth import Role
from pacs_gateway.dimse import codes
from pacs_gateway.dimse.codes import STUDY_ROOT_FIND
from pacs_testkit.hydra import Hydra
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation

pytestmark = pytest.mark.integration

USERNAME = 1


def _identity(token: str, kind: int = 5) -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = token.encode()
    return item


def _associate(port: int, identity: UserIdentityNegotiation | None) -> Any:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(STUDY_ROOT_FIND)
    return ae.associate(
        "127.0.0.1", port, ae_title="CLOUDPACS", ext_neg=[identity] if identity else None
    )


def _find_status(port: int, identity: UserIdentityNegotiation | None) -> int | None:
    """The final C-FIND status, or None when the association was not established."""
    assoc = _associate(port, identity)
    if not assoc.is_established:
        return None
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        statuses = [int(s.Status) for s, _ in assoc.send_c_find(query, STUDY_ROOT_FIND) if s]
        return statuses[-1]
    finally:
        assoc.release()


async def _status(port: int, identity: UserIdentityNegotiation | None) -> int | None:
    return await asyncio.to_thread(_find_status, port, identity)


async def test_a_token_of_the_sites_tenant_bounds_the_association_by_its_roles(
    start_gateway, hydra: Hydra, tenant: str
) -> None:
    gateway = await start_gateway(default_tenant=tenant)
    query = _identity(hydra.token(tenant, [Role.QUERY]))
    ingest_only = _identity(hydra.token(tenant, [Role.INGEST]))
    assert await _status(gateway.dicom_port, query) == codes.OUT_OF_RESOURCES
    assert await _status(gateway.dicom_port, ingest_only) == codes.NOT_AUTHORIZED


async def test_invalid_or_other_tenant_tokens_reject_the_association(
    start_gateway, hydra: Hydra, tenant: str
) -> None:
    gateway = await start_gateway(default_tenant=tenant)
    real = hydra.token(tenant, [Role.QUERY])
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode(
        claims,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(real)["kid"]},
    )
    other_tenant = hydra.token(f"{tenant}x", [Role.QUERY])
    for token in (forged, other_tenant, "not.a.jwt"):
        assert await _status(gateway.dicom_port, _identity(token)) is None


async def test_without_a_required_identity_only_a_valid_jwt_admits(
    start_gateway, hydra: Hydra, tenant: str
) -> None:
    optional = await start_gateway(default_tenant=tenant)
    required = await start_gateway(default_tenant=tenant, require_user_identity=True)
    # Optional: the site registry alone admits; a username identity is accepted unverified.
    assert await _status(optional.dicom_port, None) == codes.OUT_OF_RESOURCES
    username = _identity("modality-user", USERNAME)
    assert await _status(optional.dicom_port, username) == codes.OUT_OF_RESOURCES
    # Required: no identity, or one that is not a JWT, is rejected; a valid JWT admits.
    assert await _status(required.dicom_port, None) is None
    assert await _status(required.dicom_port, username) is None
    token = _identity(hydra.token(tenant, [Role.QUERY]))
    assert await _status(required.dicom_port, token) == codes.OUT_OF_RESOURCES

"""DICOM TLS (PS3.15 B.1, the "Basic TLS Secure Transport Connection Profile" and its BCP 195
successor B.9): the server context of the TLS port.

TLS 1.2 is the floor (BCP 195 / PS3.15 B.9). With a CA bundle, client certificates are asked
for and verified; they are required on every association when ``tls_require_client_cert`` is
set, and otherwise only for the callers whose registry entry names a certificate subject.

With ``tls_only`` the TLS port is the only DICOM port: no plaintext listener is bound, so no
association (and no patient data) can travel in the clear, whatever the registry says.
"""

from __future__ import annotations

import ssl

from pacs_gateway.settings import GatewaySettings


def server_ssl_context(settings: GatewaySettings) -> ssl.SSLContext:
    """The TLS context of the DICOM TLS port.

    Raises:
        ValueError: the certificate or key is not configured.
        OSError, ssl.SSLError: a file cannot be read or does not match.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("DICOM TLS needs PACS_GATEWAY_TLS_CERT_FILE and PACS_GATEWAY_TLS_KEY_FILE")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.tls_ca_file))
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_OPTIONAL
        )
    elif settings.tls_require_client_cert:
        raise ValueError("tls_require_client_cert needs PACS_GATEWAY_TLS_CA_FILE")
    return context

"""Bearer tokens for the benchmarks' ``/v2/`` with token auth.

One signing key per run, its self-signed certificate the registries'
``rootcertbundle``; tokens carry the certificate in their ``x5c`` header,
as Distribution's token servers (and registryd's, with
``auth.tokenserver.certificate``) do, so Distribution 2.8 and 3 and
registryd all verify the same tokens.  ``per_request.py`` uses it in
process, ``compare.py`` against the servers.
"""

import base64
import os
import time

ISSUER = "bench"
SERVICE = "registry"


class SigningKey:
    """An EC key and its self-signed certificate, written to ``directory``
    (``token.key``, ``token.crt``) for the registries' configurations."""

    def __init__(self, directory):
        from tests import certs

        self.key = certs.new_key("ec")
        self.certificate = certs.self_signed(self.key)
        self.key_path = certs.write(directory, "token.key", certs.key_pem(self.key))
        self.certificate_path = certs.write(
            directory, "token.crt", certs.cert_pem(self.certificate)
        )

    def external_token_config(self):
        """The ``auth`` section for tokens from an external token server
        (this key's): Distribution's keys."""
        return (
            "auth:\n  token:\n    realm: https://auth.example/token\n"
            f"    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.certificate_path}\n"
        )

    def mint(self, lifetime=3600):
        """A token for no repository access (enough for ``/v2/``), valid
        for ``lifetime`` seconds."""
        import jwt
        from cryptography.hazmat.primitives import serialization

        der = self.certificate.public_bytes(serialization.Encoding.DER)
        now = int(time.time())
        return jwt.encode(
            {
                "iss": ISSUER,
                "sub": "bench",
                "aud": SERVICE,
                "exp": now + lifetime,
                "nbf": now - 5,
                "iat": now,
                "jti": base64.urlsafe_b64encode(os.urandom(9)).decode(),
                "access": [],
            },
            self.key,
            algorithm="ES256",
            headers={"x5c": [base64.b64encode(der).decode()]},
        )

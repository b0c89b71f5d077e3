"""private_key_jwt: the assertion's claims and encoding, and signatures that a JOSE library
(authlib's, as IdPs use) verifies with the public key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, RSAKey

from mcp_oauth2_proxy.adapters.assertion_signer import PemAssertionSigner
from mcp_oauth2_proxy.domain.client_assertion import (
    ASSERTION_LIFETIME_SECONDS,
    Algorithm,
    compact_jws,
    signing_input,
)
from mcp_oauth2_proxy.domain.errors import ConfigError

from ..conftest import warnings

NOW = 1_800_000_000.0
TOKEN_URL = "https://idp.example.com/oauth2/token"


def pem_file(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    path = tmp_path / "client-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def public_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> RSAKey | ECKey:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RSAKey.import_key(pem) if isinstance(key, rsa.RSAPrivateKey) else ECKey.import_key(pem)


def assertion(signer: PemAssertionSigner, algorithm: Algorithm, jti: str = "j-1") -> str:
    signed = signing_input(
        client_id="svc-client",
        audience=TOKEN_URL,
        now=NOW,
        jti=jti,
        algorithm=algorithm,
        key_id="key-2026",
    )
    return compact_jws(signed, signer.sign(signed))


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_a_jose_library_verifies_the_assertion(
    tmp_path: Path,
    algorithm: Algorithm,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> None:
    signer = PemAssertionSigner(pem_file(tmp_path, key), algorithm)
    token = jwt.decode(assertion(signer, algorithm), public_key(key), algorithms=[algorithm])
    assert token.header == {"alg": algorithm, "typ": "JWT", "kid": "key-2026"}
    assert token.claims == {
        "iss": "svc-client",
        "sub": "svc-client",
        "aud": TOKEN_URL,
        "jti": "j-1",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + ASSERTION_LIFETIME_SECONDS,
    }


def test_a_tampered_assertion_does_not_verify(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = PemAssertionSigner(pem_file(tmp_path, key), "ES256")
    header, claims, signature = assertion(signer, "ES256").split(".")
    forged = claims.replace(claims[:4], "eyJp" if not claims.startswith("eyJp") else "eyJh")
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{header}.{forged}.{signature}", public_key(key), algorithms=["ES256"])


def test_no_kid_when_none_is_configured() -> None:
    signed = signing_input(
        client_id="c", audience=TOKEN_URL, now=NOW, jti="j", algorithm="RS256", key_id=None
    )
    header = signed.split(b".")[0]
    padded = header + b"=" * (-len(header) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {"alg": "RS256", "typ": "JWT"}


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    path = pem_file(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    Path(path).chmod(0o600)
    PemAssertionSigner(path, "ES256")
    assert not warnings(caplog_warnings)
    Path(path).chmod(0o644)
    PemAssertionSigner(path, "ES256")
    (warned,) = warnings(caplog_warnings)
    assert "chmod 600" in warned.getMessage()


def test_a_missing_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OAUTH2_CLIENT_ASSERTION_KEY_FILE") as raised:
        PemAssertionSigner(str(tmp_path / "absent.pem"), "RS256")
    assert "cannot read" in str(raised.value)


def test_a_file_that_is_not_a_key_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "not-a-key.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        PemAssertionSigner(str(path), "RS256")


def test_the_algorithm_must_fit_the_key(tmp_path: Path) -> None:
    ec_key = pem_file(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match=r"OAUTH2_CLIENT_ASSERTION_ALG.*RS256 needs an RSA key"):
        PemAssertionSigner(ec_key, "RS256")
    p384 = pem_file(tmp_path, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError, match="ES256 needs a P-256 EC key"):
        PemAssertionSigner(p384, "ES256")

"""The AssertionSigner port over cryptography: the client's PEM private key, loaded once,
signing each private_key_jwt assertion (RS256 with an RSA key, ES256 with a P-256 key)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..domain.client_assertion import Algorithm
from ..domain.errors import ConfigError, ConfigProblem
from .stderr_log import package_logger

log = package_logger()

KEY_FILE_SETTING = "oauth2.clientAssertionKeyFile / OAUTH2_CLIENT_ASSERTION_KEY_FILE"
ALGORITHM_SETTING = "oauth2.clientAssertionAlg / OAUTH2_CLIENT_ASSERTION_ALG"


class PemAssertionSigner:
    """Reads the key at construction, so a missing or wrong key stops the proxy at its start
    with a message naming the setting, not at the first token request."""

    def __init__(self, key_file: str, algorithm: Algorithm) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        path = Path(key_file).expanduser()
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except OSError as error:
            raise _problem(KEY_FILE_SETTING, f"cannot read {path}: {error.strerror}") from None
        except (ValueError, TypeError):
            raise _problem(
                KEY_FILE_SETTING,
                f"{path} is not an unencrypted PEM private key (PKCS#8 or traditional); "
                "export the key without a passphrase, readable only by you",
            ) from None
        if os.name != "nt" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            log.warning(
                "the private_key_jwt key file can be read by other users; make it readable "
                "only by you (chmod 600)",
                extra={"path": str(path), "setting": KEY_FILE_SETTING},
            )
        if algorithm == "RS256" and not isinstance(key, rsa.RSAPrivateKey):
            raise _problem(ALGORITHM_SETTING, f"RS256 needs an RSA key; {path} holds another kind")
        if algorithm == "ES256" and not (
            isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        ):
            raise _problem(ALGORITHM_SETTING, f"ES256 needs a P-256 EC key; {path} holds another")
        self._key = key
        self.algorithm = algorithm

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked in __init__
        # JWS wants ES256 as the two 32-byte integers side by side, not DER (RFC 7518 §3.4).
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _problem(setting: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(setting, "set", message)])

"""private_key_jwt at send time: each POST to the IdP gets its own freshly signed assertion
(RFC 7523 §3: a unique `jti`, a short life), including every retry of the same request."""

from __future__ import annotations

from ..domain.client_assertion import compact_jws, signing_input
from ..domain.ports import AssertionSigner, Clock, Entropy
from ..domain.token_exchange import TokenRequest

JTI_BYTES = 16


class ClientAssertions:
    def __init__(
        self, signer: AssertionSigner, clock: Clock, entropy: Entropy, key_id: str | None
    ) -> None:
        self._signer = signer
        self._clock = clock
        self._entropy = entropy
        self._key_id = key_id

    def signed(self, request: TokenRequest) -> TokenRequest:
        """`request` with a new assertion; its audience is the URL it is sent to (the token
        endpoint, or the device authorization endpoint), which IdPs accept."""
        data = signing_input(
            client_id=dict(request.form)["client_id"],
            audience=request.url,
            now=self._clock.now(),
            jti=self._entropy.random_bytes(JTI_BYTES).hex(),
            algorithm=self._signer.algorithm,
            key_id=self._key_id,
        )
        return request.with_assertion(compact_jws(data, self._signer.sign(data)))

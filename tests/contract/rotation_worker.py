"""One of several proxy processes sharing a token cache (run by test_login_e2e.py).

It takes a token, then forces ROUNDS renewals, each of which must use the refresh token that
whichever process rotated it last saved; it prints how many tokens it got."""

from __future__ import annotations

import os

import anyio

from mcp_oauth2_proxy import Proxy


async def main() -> None:
    rounds = int(os.environ["ROUNDS"])
    async with Proxy(Proxy.load_config()) as proxy:
        for _ in range(rounds):
            proxy.invalidate(await proxy.access_token())
    print(f"renewed {rounds} times")


if __name__ == "__main__":
    anyio.run(main)

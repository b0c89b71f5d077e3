"""`python -m mcp_oauth2_proxy`: the same as the `mcp-oauth2-proxy` command."""

import sys

from .app.cli import main

sys.exit(main())

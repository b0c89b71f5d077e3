"""Use cases (token manager, grants, configuration loading), the container, `Proxy`, the CLI."""

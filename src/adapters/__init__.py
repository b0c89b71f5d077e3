"""Adapters: each implements a port against one outside thing (httpx, the disk, stderr)."""

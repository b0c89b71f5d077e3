"""The package version, in a module of its own so adapters can name it without importing
the whole public API."""

__version__ = "0.1.0"

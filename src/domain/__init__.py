"""The pure core: configuration rules, token lifecycle, policies and the ports.

Nothing here does I/O or reads the clock; the outside world arrives through `ports`.
"""

"""Network faults for tests: re-exported from :mod:`gateway.devtools.faults`, which benchmarks use too."""

from gateway.devtools.faults import BlackHoleServer, TcpProxy

__all__ = ["BlackHoleServer", "TcpProxy"]

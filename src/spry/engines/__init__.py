"""Engines decide where a client's work runs and how its messages travel."""

from spry.engines.local import LocalEngine

__all__ = ["LocalEngine"]

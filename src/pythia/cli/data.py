"""`pythia` subcommands for this area (placeholder until filled in)."""
from __future__ import annotations


def register(sub) -> None:
    """Add this area's subcommands to the top-level parser."""

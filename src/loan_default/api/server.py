"""PLACEHOLDER - replaced by the API work: `loan-default serve`."""

from __future__ import annotations

import argparse


def add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `serve` (filled in by the API package)."""

"""PLACEHOLDER - replaced by the batch work: `loan-default worker`."""

from __future__ import annotations

import argparse


def add_worker_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `worker` (filled in by the batch package)."""

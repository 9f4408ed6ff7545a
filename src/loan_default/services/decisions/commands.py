"""`loan-default decisions …`: migrate, export for auditors, replay one decision, purge."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loan_default.core.clock import parse_utc
from loan_default.core.config import Settings, settings_or_exit

if TYPE_CHECKING:
    from loan_default.services.decisions.store import DecisionStore


def _when(text: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is UTC."""
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in {".csv", ".parquet"}:
        raise argparse.ArgumentTypeError(f"--out {text!r}: the file must end in .csv or .parquet")
    return path


def cmd_decisions(args: argparse.Namespace) -> int:
    from loan_default.services.decisions import DecisionStore, DecisionStoreUnavailable, upgrade
    from loan_default.services.decisions.partitions import retention_cutoff

    settings = settings_or_exit()
    try:
        if args.decisions_cmd == "migrate":
            upgrade(settings.decision_store_url)
            print("decision store at the latest schema")
            return 0
        with DecisionStore.from_settings(settings) as store:
            if args.decisions_cmd == "export":
                if args.end <= args.start:
                    print("error: --to must be after --from", file=sys.stderr)
                    return 2
                n = store.export(args.start, args.end, args.out)
                print(f"exported {n} decision(s) to {args.out}")
                return 0
            if args.decisions_cmd == "purge":
                months = args.months or settings.decision_retention_months
                cutoff = retention_cutoff(months)
                n = store.purge(cutoff)
                print(f"purged {n} decision(s) decided before {cutoff.isoformat()}")
                return 0
            return _replay(store, settings, args)
    except DecisionStoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _replay(store: DecisionStore, settings: Settings, args: argparse.Namespace) -> int:
    from loan_default.registry.client import Registry
    from loan_default.services.decisions.ids import valid_decision_id
    from loan_default.services.decisions.replay import replay

    if not valid_decision_id(args.decision_id):
        print(f"error: {args.decision_id!r} is not a decision id", file=sys.stderr)
        return 2
    record = store.get(args.decision_id.lower())
    if record is None:
        print(f"error: no decision {args.decision_id}", file=sys.stderr)
        return 1
    bundle = Registry(settings).load_bundle(record.model_version)
    result = replay(record, bundle)
    print(json.dumps(result.as_dict(), indent=2))
    if not result.identical:
        print("REPLAY DIFFERS from the recorded decision", file=sys.stderr)
        return 1
    return 0


def add_decisions_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decisions", help="the decision record: export, replay, migrate, purge")
    dsub = p.add_subparsers(dest="decisions_cmd", required=True)
    dsub.add_parser("migrate", help="create or upgrade the decision store's schema")
    e = dsub.add_parser("export", help="write the decisions of [--from, --to) for auditors")
    e.add_argument("--from", dest="start", type=_when, required=True, help="inclusive, ISO 8601")
    e.add_argument("--to", dest="end", type=_when, required=True, help="exclusive, ISO 8601")
    e.add_argument("--out", type=_out_path, required=True, help="file.csv or file.parquet")
    r = dsub.add_parser(
        "replay", help="re-score a decision with its recorded model version; exit 1 if it differs"
    )
    r.add_argument("decision_id")
    g = dsub.add_parser("purge", help="remove decisions older than the retention period")
    g.add_argument(
        "--months", type=int, default=None, help="default DECISION_RETENTION_MONTHS (25)"
    )
    p.set_defaults(func=cmd_decisions)

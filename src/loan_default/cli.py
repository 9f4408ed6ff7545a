"""`loan-default` command line: data, train, model registry operations, report, serve, worker."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from loan_default.core.clock import parse_utc
from loan_default.core.config import Settings
from loan_default.core.config import settings_or_exit as _settings

if TYPE_CHECKING:
    from loan_default.model.card import ModelCard


def _print_report(report: dict[str, object]) -> None:
    tm = report["test_metrics"]
    assert isinstance(tm, dict)  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    print(
        f"model {report['model_name']} v{report['model_version']} "
        f"({'PROMOTED to @' + str(report['alias']) if report['promoted'] else 'not promoted'})"
    )
    print(f"  reason: {report['reason']}")
    print("  test metrics (2000-row fixed split):")
    for k in (
        "roc_auc",
        "pr_auc",
        "brier",
        "precision_at_recall_0_8",
        "f1",
        "precision",
        "recall",
        "accuracy",
        "log_loss",
        "ece",
        "threshold",
    ):
        print(f"    {k:<24} {tm[k]:.4f}")
    cv = report["cv_metrics"]
    assert isinstance(cv, dict)  # nosec B101 - type narrowing for mypy on an invariant, not input validation
    print(f"  5-fold CV ROC-AUC: {cv['cv_roc_auc_mean']:.4f} ± {cv['cv_roc_auc_std']:.4f}")
    print(f"  training time: {report['training_seconds']} s")


def cmd_data(args: argparse.Namespace) -> int:
    from loan_default.data.dataset import DataIntegrityError, ensure_dataset

    target = Path(args.output or _settings().data_path)
    try:
        ensure_dataset(target, cache_dir=Path(args.cache_dir))
    except DataIntegrityError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 1
    print(f"data set ready: {target}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from loan_default.core.logging import configure_logging
    from loan_default.data.dataset import DataValidationError
    from loan_default.training.pipeline import train

    settings = _settings()
    configure_logging(settings)
    try:
        report = train(
            settings,
            data_path=Path(args.data) if args.data else None,
            report_path=Path(args.report) if args.report else None,
        )
    except DataValidationError as exc:
        print("training data rejected:", file=sys.stderr)
        for p in exc.problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    _print_report(report)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from loan_default.registry.client import Registry, RegistryError

    settings = _settings()
    registry = Registry(settings)
    try:
        if args.model_cmd == "list":
            versions = registry.list_versions()
            if not versions:
                print(f"no versions of {settings.model_name!r} registered")
            for v in versions:
                aliases = ",".join("@" + a for a in v.aliases) or "-"
                print(
                    f"v{v.version:<4} {aliases:<14} promoted={v.tags.get('promoted', '?'):<5} "
                    f"{v.tags.get('gate_reason', '')}"
                )
        elif args.model_cmd == "promote" and args.version == "challenger":
            return _promote_challenger(settings, args)
        elif args.model_cmd == "promote":
            if args.if_better:
                print("error: --if-better applies to `promote challenger` only", file=sys.stderr)
                return 2
            registry.promote(str(args.version), reason="manual promotion (CLI)")
            print(f"@{settings.model_alias} -> v{args.version}")
        elif args.model_cmd == "rollback":
            old, new = registry.rollback()
            print(f"@{settings.model_alias}: v{old} -> v{new}")
        elif args.model_cmd == "current":
            print(registry.alias_version() or "none")
        elif args.model_cmd == "export":
            from loan_default.registry.transfer import export_version

            manifest = export_version(registry, str(args.version), Path(args.out))
            print(
                f"exported {settings.model_name} v{args.version} to {args.out} "
                f"({len(manifest['files'])} files, sha256 in manifest.json)"
            )
        elif args.model_cmd == "import":
            from loan_default.registry.transfer import import_bundle

            result = import_bundle(settings, Path(args.archive), promote=args.promote)
            state = f"PROMOTED to @{settings.model_alias}" if result.promoted else "not promoted"
            print(
                f"imported v{result.source_version} as {settings.model_name} "
                f"v{result.version} ({state})"
            )
            print(f"  reason: {result.reason}")
            print(f"  test ROC-AUC here: {result.test_metrics['roc_auc']:.4f}")
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _promote_challenger(settings: Settings, args: argparse.Namespace) -> int:
    """`model promote challenger [--if-better]`: the live evidence comes from the decision
    store (DECISION_STORE_URL); without one, the gate uses the test set."""
    from loan_default.services.decisions import DecisionStore, DecisionStoreUnavailable
    from loan_default.training.challenger_gate import promote_challenger, window

    joined = None
    if args.if_better and settings.decision_recording != "off":
        start, end = window(settings, args.start, args.end)
        try:
            store = DecisionStore.from_settings(settings)
        except DecisionStoreUnavailable:
            print("error: the decision store cannot be reached", file=sys.stderr)
            return 1
        try:
            joined = store.outcomes_joined(start, end)
        finally:
            store.close()
    result = promote_challenger(settings, if_better=args.if_better, joined=joined)
    state = f"PROMOTED to @{settings.model_alias}" if result.promoted else "not promoted"
    print(
        f"challenger v{result.challenger_version} vs production v{result.production_version}: "
        f"{state}"
    )
    print(f"  evidence: {result.evidence}")
    print(f"  reason: {result.reason}")
    return 0 if result.promoted or not args.if_better else 3


def cmd_report(args: argparse.Namespace) -> int:
    """`report --out FILE`: the monitoring report of the decision store, as one HTML file."""
    from datetime import UTC, datetime, timedelta

    from loan_default.services import report
    from loan_default.services.decisions import DecisionStore, DecisionStoreUnavailable

    settings = _settings()
    end = args.end or datetime.now(UTC)
    start = args.start or end - timedelta(days=settings.performance_window_days)
    if start >= end:
        print("error: --from must be before --to", file=sys.stderr)
        return 2
    card, version = _production_card(settings)
    try:
        store = DecisionStore.from_settings(settings)
    except DecisionStoreUnavailable:
        print("error: the decision store cannot be reached", file=sys.stderr)
        return 1
    try:
        page = report.build(
            store, settings=settings, start=start, end=end, card=card, card_version=version
        )
    finally:
        store.close()
    Path(args.out).write_text(page, encoding="utf-8")
    print(f"report written to {args.out} ({len(page.encode()):,} bytes)")
    return 0


def _production_card(settings: Settings) -> tuple[ModelCard | None, str | None]:
    """The card of the version the serving alias points to: its training histograms are what
    the PSI chart compares with. None (the chart says so) when the registry has none."""
    from loan_default.model.bundle import CARD_FILE
    from loan_default.model.card import ModelCard
    from loan_default.registry.client import Registry

    try:
        registry = Registry(settings)
        version = registry.alias_version()
        if version is None:
            return None, None
        directory = registry.download_bundle_dir(version)
        return ModelCard.model_validate_json((directory / CARD_FILE).read_text()), version
    except Exception as exc:  # the report is still worth having without the PSI chart
        logger.warning("no model card for the PSI chart: {}", exc)
        return None, None


def _when(text: str) -> object:
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version_or_challenger(text: str) -> str:
    if text == "challenger" or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: a version number or `challenger`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loan-default", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("data", help="derive training/Default_Fin.csv from the ISLP wheel")
    p.add_argument("--output", help="target path (default: DATA_PATH)")
    p.add_argument("--cache-dir", default="var/cache", help="keep the downloaded ISLP wheel here")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train, register and (if it passes the gate) promote")
    p.add_argument("--data", help="training CSV (default: DATA_PATH)")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--json", action="store_true", help="also print the JSON report")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("model", help="registry operations")
    msub = p.add_subparsers(dest="model_cmd", required=True)
    msub.add_parser("list", help="list registered versions")
    mp = msub.add_parser(
        "promote", help="point the serving alias at VERSION, or at the challenger (`challenger`)"
    )
    mp.add_argument("version", type=_version_or_challenger, help="a version number or `challenger`")
    mp.add_argument(
        "--if-better",
        action="store_true",
        help="challenger only: promote only if it passes the gate, on live outcomes when there "
        "are CHALLENGER_MIN_OUTCOMES of them, else on the test set (exit 3 when it does not)",
    )
    mp.add_argument("--from", dest="start", type=_when, help="live evidence from (ISO 8601)")
    mp.add_argument("--to", dest="end", type=_when, help="live evidence to (ISO 8601)")
    msub.add_parser("rollback", help="alias back to the previous production version")
    msub.add_parser("current", help="print the version the serving alias points to")
    mp = msub.add_parser("export", help="write VERSION as a checked .tar.gz (manifest + bundle)")
    mp.add_argument("version", type=int)
    mp.add_argument("--out", required=True, help="archive to write, e.g. bundle.tar.gz")
    mp = msub.add_parser(
        "import", help="register an exported archive as a new version (promoted via the gate)"
    )
    mp.add_argument("archive", help="a file written by `model export`")
    mp.add_argument(
        "--promote", action="store_true", help="move the serving alias to it without the gate"
    )
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("report", help="write the monitoring report (one offline HTML page)")
    p.add_argument("--out", required=True, help="HTML file to write, e.g. report.html")
    p.add_argument("--from", dest="start", type=_when, help="decisions from (ISO 8601)")
    p.add_argument("--to", dest="end", type=_when, help="decisions before (ISO 8601; now)")
    p.set_defaults(func=cmd_report)

    _add_service_commands(sub)
    add_decisions_command(sub)
    return parser


def add_decisions_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from loan_default.services.decisions.commands import add_decisions_command as add

    add(sub)


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`serve` and `worker` are added by the API and batch packages."""
    from loan_default.api.server import add_serve_command
    from loan_default.worker.cli import add_worker_command

    add_serve_command(sub)
    add_worker_command(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception:
        logger.exception("command failed")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

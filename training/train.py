"""Thin wrapper: `python training/train.py [--data PATH] [--report FILE]` == `loan-default train`."""
import sys; from loan_default.cli import main  # noqa: E702,I001
sys.exit(main(["train", *sys.argv[1:]]))

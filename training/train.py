"""Thin wrapper: `python training/train.py [--data PATH] [--report F]` = `loan-default train`."""

import sys

from loan_default.cli import main

sys.exit(main(["train", *sys.argv[1:]]))

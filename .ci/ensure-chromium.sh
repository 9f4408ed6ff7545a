#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the monitoring report's browser test
# (tests/services/report/test_report_browser.py) opens the page in it headless, and it FAILS,
# never skips, without it. Called by `make deploy-tools` (a prerequisite of `make test`), like
# ensure-docker.sh installs docker.io. Not root and not installed: says so and exits 0, so the
# other deploy tools still install; the browser test then fails with the same instruction.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(chromium --version 2>/dev/null || echo installed)"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium: NOT INSTALLED and not root; the report's browser test will FAIL." \
    "As root: bash .ci/ensure-chromium.sh" >&2
  exit 0
fi
echo "chromium: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
echo "chromium: $(chromium --version)"

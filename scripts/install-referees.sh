#!/usr/bin/env bash
# Installs the test-only referees that do not come from Debian: llama.cpp itself, as the prebuilt
# linux-x64 binaries of the npm package node-llama-cpp (pinned), into build/referee. Their tests
# are reported as skipped when this fails (no npm registry), never as passed.
#   scripts/install-referees.sh [BUILD_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}/referee"
pkg="node-llama-cpp@3.21.1"
if [ -f "$dir/node_modules/node-llama-cpp/package.json" ] &&
   grep -q '"version": "3.21.1"' "$dir/node_modules/node-llama-cpp/package.json"; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "install-referees: npm not found; the llama.cpp referee tests will be skipped" >&2
  exit 0
fi
mkdir -p "$dir"
echo "install-referees: npm install $pkg (llama.cpp's prebuilt CPU binaries) into $dir"
if ! (cd "$dir" && npm install --silent --no-audit --no-fund -E "$pkg" >/dev/null 2>npm-error.log); then
  echo "install-referees: npm install failed (see $dir/npm-error.log); the llama.cpp referee tests will be skipped" >&2
  rm -rf "$dir/node_modules/node-llama-cpp"
fi
exit 0

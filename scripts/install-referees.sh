#!/usr/bin/env bash
# Installs the test-only referees that do not come from Debian: llama.cpp itself, as the prebuilt
# linux-x64 binaries of the npm package node-llama-cpp (pinned), into build/referee. Their tests
# are reported as skipped when this fails (no npm registry), never as passed.
#   scripts/install-referees.sh [BUILD_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}/referee"
pkg="node-llama-cpp@3.21.1"
# usable = installed at this version and loads llama.cpp on this machine's Node.js (it needs >= 20)
usable() {
  [ -f "$dir/node_modules/node-llama-cpp/package.json" ] &&
    grep -q '"version": "3.21.1"' "$dir/node_modules/node-llama-cpp/package.json" &&
    (cd "$dir" && printf '%s\n' 'const {getLlama} = await import("node-llama-cpp");' \
       'const l = await getLlama({gpu: false, build: "never", logLevel: "error"}); await l.dispose();' > check.mjs &&
     timeout 120 node check.mjs >/dev/null 2>&1)
}
if usable; then exit 0; fi
if ! command -v npm >/dev/null; then
  echo "install-referees: npm not found; the llama.cpp referee tests will be skipped" >&2
  exit 0
fi
mkdir -p "$dir"
echo "install-referees: npm install $pkg (llama.cpp's prebuilt CPU binaries) into $dir"
if ! (cd "$dir" && npm install --silent --no-audit --no-fund -E "$pkg" >/dev/null 2>npm-error.log); then
  echo "install-referees: npm install failed (see $dir/npm-error.log); the llama.cpp referee tests will be skipped" >&2
  rm -rf "$dir/node_modules/node-llama-cpp"
elif ! usable; then
  echo "install-referees: node-llama-cpp does not load here (Node.js $(node --version) < 20?); the llama.cpp" \
       "referee tests will be skipped" >&2
  rm -rf "$dir/node_modules/node-llama-cpp"
fi
exit 0

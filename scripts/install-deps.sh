#!/usr/bin/env bash
# Installs what lisa.cpp needs to build and test, from Debian 12 packages only.
#   scripts/install-deps.sh            build + test dependencies
#   scripts/install-deps.sh --golden   also PyTorch, to regenerate tests/golden (not needed to run tests)
# Each package is here on purpose:
#   g++ cmake make      the toolchain (C++20, CMake >= 3.25)
#   libopenblas-openmp-dev  cblas_sgemm for every matrix product, threaded with OpenMP (one pool
#                       with our kernels; see CMakeLists.txt)
#   nlohmann-json3-dev  config.json, safetensors headers, tokenizer.json
#   libcli11-dev        the `lisa` command line
#   libpcre2-dev        tokenizer pre-tokenizer regexes (\p{L}, \p{N}, look-ahead) with UTF + UCP
#   libutf8proc-dev     tokenizer Unicode normalization (NFC/NFKC), categories and lowercase
#   libgtest-dev        unit, kernel and golden tests (ctest)
#   libopenmpi-dev openmpi-bin  data-parallel training over MPI (mpirun -np N lisa train ...) and
#                       its 2-rank tests; CMake builds without it too (single process)
#   libvulkan-dev glslc the Vulkan backend (optional in CMake: without them lisa builds CPU-only):
#                       the loader and headers, and the GLSL compiler that turns the compute shaders
#                       into SPIR-V at build time
#   mesa-vulkan-drivers vulkan-validationlayers
#                       lavapipe, Mesa's Vulkan device on the CPU, on which the Vulkan tests run, and
#                       the Khronos validation layer they run under
#   nodejs npm          test-only, when the machine has no node / npm yet: npm fetches the llama.cpp
#                       referee (scripts/install-referees.sh); failing to install them only makes
#                       the referee's tests skip
#   python3-jinja2      test-only: jinja2 with Hugging Face's settings (tests/golden/hf_jinja.py) is
#                       the live referee of the chat-template renderer; without it those tests skip
#   librsvg2-bin        test-only: rsvg-convert renders training_loss.svg to PNG, as a user would see it
#   bible-kjv dict-gcide fortunes python3-matplotlib
#                       test-only: the data and the plot of the quality study, whose smoke mode
#                       (bench/quality.sh --smoke) is a test; without them that test skips
#   python3-torch       only with --golden: the PyTorch reference that writes tests/golden
set -euo pipefail
pkgs=(g++ cmake make pkg-config libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libgtest-dev libpcre2-dev
      libutf8proc-dev libopenmpi-dev openmpi-bin libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers)
if [[ "${1:-}" == "--golden" ]]; then pkgs+=(python3-torch python3-numpy); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# the referee's runtime: only if absent (a machine may carry its own Node.js, whose npm Debian's
# npm package conflicts with), and never fatal
optional=()
command -v node >/dev/null || optional+=(nodejs)
command -v npm >/dev/null || optional+=(npm)
/usr/bin/python3 -c 'import jinja2' 2>/dev/null || optional+=(python3-jinja2)
command -v rsvg-convert >/dev/null || optional+=(librsvg2-bin)
for p in bible-kjv dict-gcide fortunes python3-matplotlib; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || optional+=("$p")
done
if ((${#optional[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "install-deps: installing ${optional[*]} (test-only)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${optional[@]}"; } || echo "install-deps: could not install ${optional[*]}; the referee tests that need them will be skipped" >&2
fi

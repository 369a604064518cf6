#!/usr/bin/env bash
# One-step set-up on a fresh Debian 12 machine: installs the Debian packages
# that are missing, configures and builds. Idempotent; safe to rerun.
#   scripts/setup.sh            release build in build/
#   scripts/setup.sh --asan     also the ASan + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config clang libomp-dev
      libdcmtk-dev dcmtk libopenblas-dev libopenjp2-7-dev libopenjp2-tools
      libpng-dev libjpeg62-turbo-dev libsqlite3-dev sqlite3 libcjson-dev
      python3-pydicom python3-numpy python3-pil python3-regex python3-torch python3-torchvision
      libgdcm-tools dicom3tools libssl-dev orthanc orthanc-dev chromium valgrind fonts-wqy-microhei
      slurm-wlm munge)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
if [ "${1:-}" = "--asan" ]; then
  cmake -S . -B build-asan -G Ninja -DCXR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-asan -j "$JOBS"
fi

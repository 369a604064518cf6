#!/usr/bin/env bash
# Set up (packages, configure, build both the release and the ASan + UBSan
# builds) and run the whole test suite on each.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --asan
JOBS=$(nproc 2>/dev/null || echo 2)
echo "== test suite (release build)"
ctest --test-dir build --output-on-failure -j "$JOBS"
echo "== test suite (ASan + UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS"
echo "== bounded fuzzing (libFuzzer + ASan/UBSan, ${CXR_FUZZ_SECONDS:-30} s per target)"
tests/fuzz/ci_fuzz.sh
echo "== the fuzzing step still catches a bug (planted in a scratch copy of the tree)"
tests/fuzz/check_planted.sh
echo "== Orthanc integration under the leak checkers (Orthanc + plugin under valgrind memcheck, ASan + LSan workers)"
/usr/bin/python3 tests/plugin/orthanc/test_orthanc.py --valgrind --plugin build/libcxrvqa_orthanc.so --cxrvqa build/cxrvqa \
  --worker-cxrvqa build-asan/cxrvqa --sample-data sample_data || [ $? -eq 77 ]  # 77: Orthanc or valgrind missing (printed)

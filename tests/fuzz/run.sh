#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each one for
# SECONDS seconds (default 60) from the seed corpus in tests/fuzz/corpus.
# A crash, hang, leak or oversized allocation fails the run; the reproducer is
# written to build/fuzz/artifacts/. New inputs go to build/fuzz/work/<target>/,
# so the committed seed corpus only changes by hand (add reproducers there).
#
#   bash tests/fuzz/run.sh [SECONDS] [target ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(fuzz_safetensors fuzz_config fuzz_model)

# clang + the libFuzzer runtime (Debian: libclang-rt-<ver>-dev) when missing:
# probe by linking an empty fuzz target.
CXX_FUZZ=${CXX_FUZZ:-$(command -v clang++ || true)}
links() {
  local d; d=$(mktemp -d)
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$d/t.cpp"
  "$1" -fsanitize=fuzzer,address,undefined "$d/t.cpp" -o "$d/t" >/dev/null 2>&1
  local rc=$?; rm -rf "$d"; return $rc
}
if [ -z "$CXX_FUZZ" ] || ! links "$CXX_FUZZ"; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
  ver=$(clang++ --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)
  # Debian 12+ ships libFuzzer in libclang-rt-<ver>-dev; older releases in libclang-common.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "libclang-rt-${ver}-dev" >/dev/null 2>&1 || true
  CXX_FUZZ=$(command -v clang++)
  links "$CXX_FUZZ" || { echo "clang++ cannot link a libFuzzer target" >&2; exit 1; }
fi
CC_FUZZ=${CC_FUZZ:-$(dirname "$CXX_FUZZ")/clang}

B=build/fuzz
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX_FUZZ" \
  -DCMAKE_C_COMPILER="$CC_FUZZ" -DBASED_CORE_FUZZ=ON -DBASED_CORE_CUDA=OFF -DBASED_CORE_PYTHON=OFF \
  -DBASED_CORE_TESTS=OFF -DBASED_CORE_INSTALL=OFF -DBASED_CORE_APPS=OFF >/dev/null
cmake --build $B -j "$(nproc)" --target "${TARGETS[@]}"

mkdir -p $B/artifacts
status=0
for t in "${TARGETS[@]}"; do
  case $t in
    fuzz_safetensors) seeds=safetensors; dict=safetensors.dict ;;
    fuzz_config) seeds=config; dict=config.dict ;;
    fuzz_model) seeds=model; dict=safetensors.dict ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  mkdir -p $B/work/$t
  echo "== $t: ${SECONDS_PER_TARGET} s"
  # -timeout: an input taking 10 s is a hang; -malloc_limit_mb: no input of
  # at most 64 KiB may make the parsers ask for 512 MiB at once.
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
      $B/tests/fuzz/$t $B/work/$t tests/fuzz/corpus/$seeds -dict=tests/fuzz/$dict \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=512 -artifact_prefix=$B/artifacts/$t- -print_final_stats=1 \
      > $B/$t.log 2>&1; then
    echo "!! $t failed; see $B/$t.log and $B/artifacts/" >&2
    status=1
  fi
  grep -E "^(stat::|#[0-9]+ +DONE)|Done [0-9]+ runs|ERROR|SUMMARY" $B/$t.log | tail -12 || true
done
exit $status

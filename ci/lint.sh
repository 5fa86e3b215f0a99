#!/usr/bin/env bash
# Formatting, clippy with warnings as errors on every target and feature, and rustdoc
# warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The optional `iceoryx2` feature (iceoryx2 as one more transport of `shm bench`) is built
# and linted here, and its tests run, so that the feature never rots.
echo "== clippy and tests with --all-features (iceoryx2)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --locked --all-features --test bench_cli
echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "== lint: ok"

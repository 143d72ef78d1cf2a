#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# (unit, in-process API tests on temporary SQLite files, and the e2e tests
# that drive the real `knit` binary). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The e2e tests run the real binary: build it first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"

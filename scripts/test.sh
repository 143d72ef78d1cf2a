#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# (unit, in-process API tests on temporary SQLite files, and the e2e tests
# that drive the real `knit` binary). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real kubectl v1.35 for the e2e tests, fetched once and cached.
if [[ -z "${KNIT_KUBECTL:-}" ]]; then
    if KNIT_KUBECTL=$(scripts/fetch-kubectl.sh); then
        export KNIT_KUBECTL
    elif [[ "${CI:-}" == true ]]; then
        echo "could not fetch kubectl" >&2
        exit 1
    else
        echo "warning: no kubectl; the kubectl e2e tests will skip" >&2
    fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The e2e tests run the real binary: build it first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"

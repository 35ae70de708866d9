#!/usr/bin/env bash
# Every check CI runs, from a fresh Debian machine: PostgreSQL set up for real
# (ANNALS_REQUIRE_POSTGRES=1, so its tests cannot skip), Chromium for the console test
# (ANNALS_REQUIRE_CHROMIUM=1), a Kafka-protocol broker for the bridge
# (ANNALS_REQUIRE_KAFKA=1), formatting, lints, docs, the whole test suite, and the
# book.
set -euo pipefail
cd "$(dirname "$0")/.."

export ANNALS_TEST_POSTGRES_URL
ANNALS_TEST_POSTGRES_URL=$(scripts/postgres.sh | tail -n 1)
export ANNALS_REQUIRE_POSTGRES=1
# The certificate authority postgres.sh made for the cluster's TLS.
export ANNALS_TEST_POSTGRES_CA="${ANNALS_PG_TLS_DIR:-/var/lib/postgresql/annals-tls}/ca.crt"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Chromium (headless console test)" >&2
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export ANNALS_REQUIRE_CHROMIUM=1
# The Kafka bridge's tests run against a real broker (ANNALS_REQUIRE_KAFKA=1, so they
# cannot skip).
export ANNALS_TEST_TANSU
ANNALS_TEST_TANSU=$(scripts/tansu.sh | tail -n 1)
export ANNALS_REQUIRE_KAFKA=1
export CARGO_TERM_COLOR=never
# A fresh clone gains nothing from incremental caches; they only take disk.
export CARGO_INCREMENTAL=0

echo "== format"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== one engine at a time"
# The library as a dependency may take it: each engine alone, and neither (the
# in-memory store only).
for features in "" sqlite postgres; do
  cargo clippy -p annals --no-default-features --features "$features" -- -D warnings
done
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== tests"
cargo test --workspace
echo "== book"
command -v mdbook >/dev/null 2>&1 || cargo install mdbook --locked --no-default-features --quiet
mdbook build book

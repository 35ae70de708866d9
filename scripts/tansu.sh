#!/usr/bin/env bash
# The Kafka-protocol broker the bridge's tests run against: tansu, built once from
# crates.io into target/tools/tansu and kept there. Prints the broker's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/tools/tansu"
if [ ! -x "$root/bin/tansu" ]; then
  echo "building the tansu broker once (about ten minutes on two cores)" >&2
  cargo install tansu --version 0.6.0 --locked --no-default-features --features libsql \
    --root "$root" --quiet
fi
echo "$root/bin/tansu"

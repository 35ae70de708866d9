#!/usr/bin/env bash
# The main job: the `shop` e-commerce app on embedded SQLite, end to end. It builds
# `shop`, then `shop demo` lists a catalogue, places orders from many customers (some
# cards are declined, two products run out), lets the order saga reserve stock, take
# payment and compensate, ships half the paid orders, and prints the SQL views.
# Pass `--db postgres://…` to run the same on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p shop
exec target/release/shop demo "$@"

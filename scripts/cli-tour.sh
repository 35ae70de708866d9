#!/usr/bin/env bash
# A short tour of the `annals` command on an embedded SQLite store: create it, append
# with optimistic concurrency and a command id, read back, look at partitions, and a
# three-second benchmark against raw SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p annals-cli
db=sqlite://target/annals-demo.db
rm -f target/annals-demo.db target/annals-demo.db-wal target/annals-demo.db-shm
annals() { echo "\$ annals $*" >&2; target/release/annals --db "$db" "$@"; echo >&2; }

annals init --partitions 16
command=0193a4d2-7c1e-7000-8000-00000000c0de
annals append order-7f3c --type OrderPlaced --data '{"customer":"alice","lines":2,"total":2599}' \
  --expected no_stream --command-id "$command"
annals append order-7f3c --type OrderPlaced --data '{"customer":"alice","lines":2,"total":2599}' \
  --expected no_stream --command-id "$command"
annals append order-7f3c --type OrderPaid --data '{"amount":2599}' --expected no_stream ||
  echo "(refused, as it should be: the order already exists)" >&2
annals append order-7f3c --type OrderPaid --data '{"amount":2599}' --expected 1 \
  --metadata '{"correlation_id":"0193a4d2-7c1e-7000-8000-0000000000aa","channel":"web"}'
annals append customer-alice --type CustomerRegistered --data '{"name":"Alice"}'
annals read order-7f3c
annals streams
annals tail --partition 15
annals stats
annals bench append --writers 8 --events-per-append 1 --seconds 3

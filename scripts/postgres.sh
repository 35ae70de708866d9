#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the tests on a Debian machine: installs it if
# missing, starts the first cluster, and creates the role and a fresh test database.
# Prints the database URL on its last line.
set -euo pipefail

role=${ANNALS_PG_ROLE:-annals}
database=${ANNALS_PG_DATABASE:-annals_test}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  echo "installing PostgreSQL" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
if [ "$status" != "online" ]; then
  as_root pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$port" >&2

as_postgres "psql -p $port -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = '$role'\"" | grep -q 1 ||
  as_postgres "psql -p $port -qc \"CREATE ROLE $role LOGIN SUPERUSER PASSWORD '$role'\""
as_postgres "dropdb -p $port --if-exists $database && createdb -p $port -O $role $database"
echo "postgres://$role:$role@127.0.0.1:$port/$database"

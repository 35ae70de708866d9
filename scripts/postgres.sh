#!/usr/bin/env bash
# Makes a local PostgreSQL ready for the tests on a Debian machine: installs it if
# missing, starts the first cluster, turns on TLS with a test certificate authority,
# and creates the role and a fresh test database. Prints the database URL on its last
# line.
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

# TLS with a certificate authority of its own, made once per machine: the server's
# certificate names localhost only, so `verify-full` to 127.0.0.1 must fail. The tests
# read the authority's certificate from $tls/ca.crt.
tls=${ANNALS_PG_TLS_DIR:-/var/lib/postgresql/annals-tls}
if [ ! -s "$tls/server.crt" ]; then
  command -v openssl >/dev/null 2>&1 || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  as_root mkdir -p "$tls"
  as_root openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -subj "/CN=annals test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  as_root openssl req -new -nodes -newkey rsa:2048 -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\n' | as_root tee "$tls/server.ext" >/dev/null
  as_root openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls/server.ext" -out "$tls/server.crt" 2>/dev/null
  as_root chown -R postgres:postgres "$tls"
  as_root chmod 600 "$tls/server.key" "$tls/ca.key"
  as_root chmod 644 "$tls/ca.crt" "$tls/server.crt"
fi
as_postgres "psql -p $port -qc \"ALTER SYSTEM SET ssl_cert_file = '$tls/server.crt'\" \
  -c \"ALTER SYSTEM SET ssl_key_file = '$tls/server.key'\" -c \"ALTER SYSTEM SET ssl = on\" \
  -c \"SELECT pg_reload_conf()\"" >/dev/null

as_postgres "psql -p $port -qtAc \"SELECT 1 FROM pg_roles WHERE rolname = '$role'\"" | grep -q 1 ||
  as_postgres "psql -p $port -qc \"CREATE ROLE $role LOGIN SUPERUSER PASSWORD '$role'\""
as_postgres "dropdb -p $port --if-exists $database && createdb -p $port -O $role $database"
echo "postgres://$role:$role@127.0.0.1:$port/$database"

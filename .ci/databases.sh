#!/usr/bin/env bash
# Starts real MariaDB and PostgreSQL servers for the mysql/pgsql health-check
# tests (internal/health). Debian, as root, no systemd. Idempotent: run it as
# often as you like; it installs only what is missing, starts only what is
# down and resets the test user's password each time.
#
# stdout carries only the lines to eval, everything else goes to stderr:
#   eval "$(.ci/databases.sh)"
# which exports DISTER_TEST_MYSQL_DSN and DISTER_TEST_PGSQL_DSN.
set -euo pipefail

DB_USER=dister
DB_PASS=disterpw
DB_NAME=dister
MYSQL_PORT=3306
PG_PORT=5432

log() { echo "databases.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (it installs and starts system services)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# --- install what is missing -------------------------------------------------
missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

# --- MariaDB -----------------------------------------------------------------
mysql_up() { mariadb-admin --protocol=socket -uroot ping >/dev/null 2>&1; }
if ! mysql_up; then
  log "starting MariaDB"
  # The init script works without systemd; fall back to mysqld_safe if an
  # image lacks it (policy-rc.d only blocks starts made by the package hooks).
  if ! service mariadb start >&2 2>&1; then
    install -d -o mysql -g mysql /run/mysqld
    (mysqld_safe >/dev/null 2>&1 &)
  fi
  for _ in $(seq 1 60); do mysql_up && break; sleep 0.5; done
  mysql_up || { log "MariaDB did not start"; exit 1; }
fi
# root logs in through the unix socket (Debian's unix_socket auth), so no
# root password is needed or set. Both host names: the client may resolve
# 127.0.0.1 to either depending on skip-name-resolve.
mariadb --protocol=socket -uroot >&2 <<SQL
CREATE DATABASE IF NOT EXISTS \`${DB_NAME}\`;
CREATE USER IF NOT EXISTS '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '${DB_PASS}';
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
ALTER USER '${DB_USER}'@'127.0.0.1' IDENTIFIED BY '${DB_PASS}';
ALTER USER '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASS}';
GRANT ALL PRIVILEGES ON \`${DB_NAME}\`.* TO '${DB_USER}'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`${DB_NAME}\`.* TO '${DB_USER}'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- PostgreSQL --------------------------------------------------------------
PG_VER=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VER" '$1==v && $2=="main"' | grep -q .; then
  log "creating PostgreSQL $PG_VER cluster main"
  pg_createcluster -p "$PG_PORT" "$PG_VER" main >&2
fi
pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }
if ! pg_up; then
  log "starting PostgreSQL $PG_VER"
  pg_ctlcluster "$PG_VER" main start >&2 || service postgresql start >&2
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { log "PostgreSQL did not start"; exit 1; }
fi
# Debian's default pg_hba.conf already asks for scram-sha-256 over TCP on
# 127.0.0.1, which is what the wrong-password test needs.
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" >&2 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${DB_USER}') THEN
    CREATE ROLE ${DB_USER} LOGIN;
  END IF;
END
\$\$;
ALTER ROLE ${DB_USER} LOGIN PASSWORD '${DB_PASS}';
SELECT 'CREATE DATABASE ${DB_NAME} OWNER ${DB_USER}'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DB_NAME}') \gexec
SQL

# --- wait until the test user gets in over TCP -----------------------------------
ok=
for _ in $(seq 1 60); do
  if mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$DB_USER" -p"$DB_PASS" "$DB_NAME" -e 'SELECT 1' >/dev/null 2>&1 &&
    PGPASSWORD=$DB_PASS psql -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d "$DB_NAME" -tAc 'SELECT 1' >/dev/null 2>&1; then
    ok=1
    break
  fi
  sleep 0.5
done
[ -n "$ok" ] || { log "test user cannot log in over TCP"; exit 1; }
log "MariaDB on 127.0.0.1:$MYSQL_PORT and PostgreSQL on 127.0.0.1:$PG_PORT ready"

echo "export DISTER_TEST_MYSQL_DSN='${DB_USER}:${DB_PASS}@tcp(127.0.0.1:${MYSQL_PORT})/${DB_NAME}'"
echo "export DISTER_TEST_PGSQL_DSN='postgres://${DB_USER}:${DB_PASS}@127.0.0.1:${PG_PORT}/${DB_NAME}?sslmode=disable'"

#!/usr/bin/env bash
# Back up or restore the PCRM database named by DATABASE_URL (PostgreSQL or SQLite).
#   deploy/backup.sh backup  [FILE]   # default FILE: backups/pcrm-<UTC time>.(dump|sqlite3)
#   deploy/backup.sh restore FILE     # stop `pcrm serve` first; then `pcrm db upgrade` and start it
# PostgreSQL: pg_dump custom format (consistent snapshot while serving), pg_restore --clean.
# SQLite: the online backup API (consistent while serving); restore replaces the file.
# With compose: docker compose -f deploy/compose.yml exec -T postgres pg_dump -U pcrm -Fc pcrm > FILE
set -euo pipefail

cmd=${1:-}
file=${2:-}
url=${DATABASE_URL:-sqlite:///var/pcrm.db}
stamp=$(date -u +%Y%m%dT%H%M%SZ)

case "$url" in
  postgresql*|postgres:*)
    pgurl=${url/+psycopg/}  # libpq does not know SQLAlchemy's driver suffix
    case "$cmd" in
      backup)
        file=${file:-backups/pcrm-$stamp.dump}
        mkdir -p "$(dirname "$file")"
        pg_dump --format=custom --no-owner --no-privileges --file="$file" "$pgurl"
        ;;
      restore)
        [ -f "$file" ] || { echo "no such backup: $file" >&2; exit 2; }
        pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --dbname="$pgurl" "$file"
        ;;
      *) echo "usage: $0 backup [FILE] | restore FILE" >&2; exit 2 ;;
    esac
    ;;
  sqlite:///*)
    db=${url#sqlite:///}
    case "$cmd" in
      backup)
        file=${file:-backups/pcrm-$stamp.sqlite3}
        mkdir -p "$(dirname "$file")"
        python3 - "$db" "$file" <<'PY'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close(); src.close()
PY
        ;;
      restore)
        [ -f "$file" ] || { echo "no such backup: $file" >&2; exit 2; }
        rm -f "$db-wal" "$db-shm"
        cp "$file" "$db"
        ;;
      *) echo "usage: $0 backup [FILE] | restore FILE" >&2; exit 2 ;;
    esac
    ;;
  *) echo "unsupported DATABASE_URL: ${url%%:*}" >&2; exit 2 ;;
esac
echo "$cmd: $file"

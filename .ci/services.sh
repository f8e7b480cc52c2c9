#!/usr/bin/env bash
# What `make test` needs from the machine, in three steps:
#
#   .ci/services.sh install       as root: apt-get install the Debian packages
#                                 the tests use, when any is missing
#   .ci/services.sh install-run   the same for what `make run` needs (browser
#                                 RDP's programs); not root: one line saying
#                                 what to install, and the broker still runs
#   .ci/services.sh start         start PostgreSQL and Redis when installed
#                                 but not running
#   .ci/services.sh database-url  print a PostgreSQL URL for the test pass
#                                 (creating the role/database if needed), or
#                                 nothing when PostgreSQL is not available
#
# Under CI=true a PostgreSQL or Redis that cannot be reached is a failure.
# Outside CI the tests that need them skip and say how to enable them.
set -euo pipefail

case "${CI:-}" in 1|true|TRUE|True|yes) IN_CI=1 ;; *) IN_CI=0 ;; esac
REDIS_PORT=6379
PG_HOST=127.0.0.1
PG_PORT=5432
# The database the PostgreSQL pass names; pytest-django creates test_<name>.
PG_DB=airlock

say() { echo "services: $*" >&2; }
die() { echo "services: FAILED: $*" >&2; exit 1; }
need_or_warn() { if [ "$IN_CI" = 1 ]; then die "$*"; else say "$* (outside CI: the tests that need it skip)"; fi; }

# Debian package for each command the tests run. Add a line when a test
# needs a new program.
PACKAGES=(
  "sshd:openssh-server" "ssh:openssh-client" "scp:openssh-client" "sftp:openssh-client"
  "chromium:chromium" "tmux:tmux" "asciinema:asciinema"
  "pg_ctlcluster:postgresql" "psql:postgresql-client" "redis-server:redis-server"
  "redis-cli:redis-tools" "npm:npm" "oathtool:oathtool" "plink:putty-tools" "curl:curl" "openssl:openssl"
  # Browser RDP: the per-session desktop, the RDP client, the recorder, and
  # for the tests a FreeRDP shadow server on a virtual X display as the device.
  "Xvnc:tigervnc-standalone-server" "xfreerdp:freerdp2-x11" "ffmpeg:ffmpeg"
  "Xvfb:xvfb" "xsetroot:x11-xserver-utils" "xterm:xterm" "xdotool:xdotool"
  "freerdp-shadow-cli:freerdp2-shadow-x11" "winpr-hash:winpr-utils"
)

# What `make run` needs: the programs of browser RDP's private desktops
# (sessions/doors/rdp/desktop.py RUNTIME_PACKAGES). Without them the broker runs and its
# RDP pages say what to install.
RUN_PACKAGES=("Xvnc:tigervnc-standalone-server" "xfreerdp:freerdp2-x11" "ffmpeg:ffmpeg")

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# missing_packages ENTRY...: the Debian packages of the commands not found.
missing_packages() {
  local entry cmd pkg
  for entry in "$@"; do
    cmd=${entry%%:*}; pkg=${entry#*:}
    have "$cmd" || echo "$pkg"
  done | sort -u  # scp/sftp/ssh share a package
}

apt_install() {
  say "installing: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The packages' own daemons (openssh-server's sshd on port 22 of every
  # interface, …) must not start: the tests run their own, on loopback.
  # policy-rc.d exiting 101 tells invoke-rc.d not to start anything.
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
  fi
  local rc=0
  apt-get install -y -q --no-install-recommends "$@" || rc=$?
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
  return $rc
}

install() {
  local missing
  mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
  if [ ${#missing[@]} -eq 0 ]; then
    say "every Debian package the tests need is installed"
    return
  fi
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    need_or_warn "missing Debian packages (not root, cannot install): ${missing[*]}"
    return
  fi
  apt_install "${missing[@]}"
}

install_run() {
  local missing
  mapfile -t missing < <(missing_packages "${RUN_PACKAGES[@]}")
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    echo "make run: browser RDP is unavailable until these Debian packages are installed (as root): apt-get install ${missing[*]}" >&2
    return
  fi
  # Offline or a broken mirror: the broker still runs, without browser RDP.
  apt_install "${missing[@]}" ||
    echo "make run: apt-get could not install ${missing[*]}; browser RDP is unavailable until they are installed" >&2
}

pg_running() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }
redis_running() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_postgres() {
  if pg_running; then say "PostgreSQL is running on $PG_HOST:$PG_PORT"; return; fi
  if ! have pg_ctlcluster || [ ! -d /etc/postgresql ]; then
    need_or_warn "PostgreSQL is not installed"
    return
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_running && break; sleep 1; done
  pg_running || need_or_warn "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
}

start_redis() {
  if redis_running; then say "Redis is running on 127.0.0.1:$REDIS_PORT"; return; fi
  if ! have redis-server; then
    need_or_warn "Redis is not installed"
    return
  fi
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  local dir=/var/lib/redis logdir=/var/log/redis
  [ -w "$dir" ] || dir=$(mktemp -d)
  [ -w "$logdir" ] || logdir=$(mktemp -d)
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir "$dir" --logfile "$logdir/airlock-test.log" || true
  for _ in $(seq 1 30); do redis_running && break; sleep 0.5; done
  redis_running || need_or_warn "Redis did not come up on 127.0.0.1:$REDIS_PORT"
}

# The URL for the PostgreSQL pass. AIRLOCK_TEST_DATABASE_URL wins. Otherwise
# the postgres role over TCP when the server trusts local connections (a
# developer's set-up), else a password role "airlock" created through the
# local socket as the postgres system user (Debian's default pg_hba.conf
# asks for a password over TCP).
database_url() {
  if [ -n "${AIRLOCK_TEST_DATABASE_URL:-}" ]; then echo "$AIRLOCK_TEST_DATABASE_URL"; return; fi
  if ! pg_running; then
    need_or_warn "PostgreSQL is not reachable on $PG_HOST:$PG_PORT"
    return
  fi
  local url="postgres://postgres@$PG_HOST:$PG_PORT"
  if ! psql "$url/postgres" -tAc 'select 1' >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! have runuser; then
      need_or_warn "cannot log in to PostgreSQL as postgres; set AIRLOCK_TEST_DATABASE_URL"
      return
    fi
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres -c \
      "DO \$\$ BEGIN
         IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airlock') THEN
           CREATE ROLE airlock LOGIN CREATEDB PASSWORD 'airlock';
         END IF;
       END \$\$;" >&2 || die "could not create the airlock role in PostgreSQL"
    url="postgres://airlock:airlock@$PG_HOST:$PG_PORT"
    psql "$url/postgres" -tAc 'select 1' >/dev/null 2>&1 || die "cannot log in to PostgreSQL as airlock"
  fi
  if [ "$(psql "$url/postgres" -tAc "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    psql "$url/postgres" -qc "create database $PG_DB" >&2 || die "could not create database $PG_DB"
  fi
  # A test database left by an interrupted run, perhaps still held by one
  # of its processes, would stop pytest-django from creating a fresh one.
  psql "$url/postgres" -qtAc "select pg_terminate_backend(pid) from pg_stat_activity
    where datname = 'test_$PG_DB' and pid <> pg_backend_pid()" >/dev/null 2>&1 || true
  psql "$url/postgres" -qc "drop database if exists test_$PG_DB" >/dev/null 2>&1 || true
  echo "$url/$PG_DB"
}

case "${1:-}" in
  install) install ;;
  install-run) install_run ;;
  start) start_postgres; start_redis ;;
  database-url) database_url ;;
  *) echo "usage: $0 install|install-run|start|database-url" >&2; exit 2 ;;
esac

# Sourced by .ci/suites: installs (when missing) and starts a throwaway PostgreSQL and Redis on
# loopback, in a temporary folder, and exports their URLs for the suites that need them:
#
#   MFA_STEP_TEST_POSTGRES   postgres://postgres@127.0.0.1:<port>/postgres   (trust auth, fsync on)
#   MFA_STEP_TEST_REDIS      redis://127.0.0.1:<port>/
#
# `stop_servers` stops both and removes their files. Fails (never skips) when either cannot start.

servers_dir=$(mktemp -d /tmp/mfa-step-servers.XXXXXX)
chmod 755 "$servers_dir"
pg_port=$((40000 + RANDOM % 10000))
redis_port=$((pg_port + 1))

install_servers() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql redis-server >/dev/null
  fi
}

# Runs a command as the postgres user when we are root (initdb refuses root), else as ourselves.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start_servers() {
  install_servers
  local bin
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  mkdir -p "$servers_dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$servers_dir/pg"
  as_postgres "$bin/initdb" -D "$servers_dir/pg/data" -A trust -U postgres >/dev/null
  as_postgres "$bin/pg_ctl" -D "$servers_dir/pg/data" -l "$servers_dir/pg/log" -w \
    -o "-k $servers_dir/pg -p $pg_port -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300" \
    start >/dev/null || { cat "$servers_dir/pg/log" >&2; return 1; }
  export MFA_STEP_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port/postgres"

  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$servers_dir/redis.pid" --logfile "$servers_dir/redis.log" \
    --dir "$servers_dir"
  for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping | grep -q PONG || { cat "$servers_dir/redis.log" >&2; return 1; }
  export MFA_STEP_TEST_REDIS="redis://127.0.0.1:$redis_port/"
  echo "postgres $("$bin/postgres" --version | awk '{print $3}') on $pg_port, $(redis-server --version | awk '{print $3}') on $redis_port"
}

stop_servers() {
  local bin
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)" 2>/dev/null)
  [ -d "$servers_dir/pg/data" ] && as_postgres "$bin/pg_ctl" -D "$servers_dir/pg/data" -m fast stop >/dev/null 2>&1
  [ -f "$servers_dir/redis.pid" ] && kill "$(cat "$servers_dir/redis.pid")" 2>/dev/null
  rm -rf "$servers_dir"
}

#!/usr/bin/env bash
# `make bench`: the standard comparison of PostgreSQL directly, sidepool and PgBouncer, measured
# by sidepool-loadtest on a throwaway PostgreSQL, and MariaDB directly vs sidepool on a throwaway
# MariaDB. Writes bench/results.md, bench/results.json and bench/chart.svg. Every process and temp
# dir it starts is removed on exit.
#
# Both poolers: transaction mode, 20 server connections, SCRAM-SHA-256 for clients and server.
# Knobs (environment): BENCH_DURATION (measured time per round and target, default 8s),
# BENCH_WARMUP (default 1s), BENCH_ROUNDS (default 3), BENCH_IDLE (idle clients, default 2000),
# BENCH_SCALE (pgbench scale, default 10), BENCH_BASELINE (a second sidepool binary measured
# beside this one as `sidepool-base`), BENCH_ONLY (space-separated run names, e.g. "idle
# select-10": only those run; the results files then hold only those). The defaults keep a run near 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${BENCH_DURATION:-8s}"
warmup="${BENCH_WARMUP:-1s}"
rounds="${BENCH_ROUNDS:-3}"
idle_clients="${BENCH_IDLE:-2000}"
scale="${BENCH_SCALE:-10}"
pool_size=20

target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d /tmp/sidepool-bench.XXXXXX)"
chmod 755 "$work"
pids=()
cleanup() {
  # Reverse order: poolers first, the database (whose testbed removes its data dir) last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# 2,000 idle clients and the poolers' sockets need more descriptors than the usual 1024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  echo "==> installing pgbouncer"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq pgbouncer >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq pgbouncer >/dev/null; }
fi
pgbouncer_bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

echo "==> building release binaries"
"${CARGO:-cargo}" build --release --locked -q -p sidepool -p sidepool-loadtest

# A port on 127.0.0.1 nobody listens on right now.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
wait_port() { # port pid name
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "$3 did not start listening on port $1; its log:" >&2
  cat "$work/$3.log" >&2 || true
  exit 1
}

password="bench-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SIDEPOOL_BENCH_PASSWORD="$password"

# Waits for a `sidepool-loadtest testbed` (pid $1) to print READY=1 into $work/$2.env, then
# sources it; shows $work/$2.log if it dies or takes longer than $3 tenths of a second.
wait_testbed() {
  for _ in $(seq 1 "$3"); do
    grep -q '^READY=1' "$work/$2.env" 2>/dev/null && break
    kill -0 "$1" 2>/dev/null || { cat "$work/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^READY=1' "$work/$2.env" || { echo "$2 testbed did not come up" >&2; cat "$work/$2.log" >&2; exit 1; }
  # shellcheck disable=SC1090
  . "$work/$2.env"
}

echo "==> starting a throwaway PostgreSQL"
"$target/sidepool-loadtest" testbed postgres --auth scram --user bench --password "$password" \
  --max-connections 600 >"$work/testbed.env" 2>"$work/testbed.log" &
pids+=($!)
wait_testbed "${pids[0]}" testbed 300
export PGPASSWORD="$password"
echo "    PostgreSQL $PGHOST:$PGPORT"

echo "==> starting a throwaway MariaDB with pgbench's tables at scale $scale"
"$target/sidepool-loadtest" testbed mariadb --user bench --password "$password" \
  --max-connections 600 --pgbench-scale "$scale" >"$work/mariadb.env" 2>"$work/mariadb.log" &
pids+=($!)
wait_testbed "$!" mariadb 1200
echo "    MariaDB $MYSQL_HOST:$MYSQL_PORT"

echo "==> pgbench -i -s $scale (directly)"
"$PG_BIN/pgbench" -i -q -s "$scale" -h "$PGHOST" -p "$PGPORT" -U bench bench >"$work/pgbench-init.log" 2>&1 ||
  { cat "$work/pgbench-init.log" >&2; exit 1; }

sp_port="$(free_port)"
sp_my_port="$(free_port)"
admin_port="$(free_port)"
# What both pools share: limits and the user.
pool_rest="[pools.limits]
max_open = $pool_size
max_idle = $pool_size
wait_timeout = \"60s\"
max_waiting = 5000
max_clients = 5000

[[pools.users]]
name = \"bench\"
password = \"\${SIDEPOOL_BENCH_PASSWORD}\""
# sidepool's config with its admin, PostgreSQL and MySQL ports.
sidepool_toml() {
  cat <<TOML
# Written by scripts/bench.sh.
[admin]
listen = "127.0.0.1:$1"

[log]
level = "warn"

[[pools]]
name = "bench"
protocol = "postgres"
listen = "127.0.0.1:$2"
mode = "transaction"
primary = "$PGHOST:$PGPORT"
client_auth = "password"

$pool_rest

[[pools]]
name = "bench-mysql"
protocol = "mysql"
listen = "127.0.0.1:$3"
mode = "transaction"
primary = "$MYSQL_HOST:$MYSQL_PORT"
client_auth = "password"

$pool_rest
TOML
}
# Starts `$1` (a sidepool binary) as `$2` with config `$2.toml`; sets `started_pid`.
start_sidepool() {
  "$1" check --config "$work/$2.toml" >"$work/$2-check.log" 2>&1 ||
    { cat "$work/$2-check.log" >&2; exit 1; }
  "$1" --config "$work/$2.toml" 2>"$work/$2.log" &
  started_pid=$!
  pids+=("$started_pid")
}
sidepool_toml "$admin_port" "$sp_port" "$sp_my_port" >"$work/sidepool.toml"
echo "==> starting sidepool on 127.0.0.1:$sp_port"
start_sidepool "$target/sidepool" sidepool
sp_pid=$started_pid
wait_port "$sp_port" "$sp_pid" sidepool

# BENCH_BASELINE=/path/to/sidepool: a second sidepool (another build, e.g. main's) measured in
# the same interleaved runs as `sidepool-base`, so that a change's cost is compared side by side.
baseline=()
my_baseline=()
if [ -n "${BENCH_BASELINE:-}" ]; then
  base_port="$(free_port)"
  base_my_port="$(free_port)"
  sidepool_toml "$(free_port)" "$base_port" "$base_my_port" >"$work/sidepool-base.toml"
  echo "==> starting the baseline sidepool ($BENCH_BASELINE) on 127.0.0.1:$base_port"
  start_sidepool "$BENCH_BASELINE" sidepool-base
  base_pid=$started_pid
  wait_port "$base_port" "$base_pid" sidepool-base
fi

pgb_port="$(free_port)"
pgb_version="$("$pgbouncer_bin" --version | head -n 1 | awk '{print $2}')"
# PgBouncer learned named prepared statements in transaction mode in 1.21.
pgb_prepared=no
if [ "$(printf '%s\n1.21\n' "$pgb_version" | sort -V | head -n 1)" = "1.21" ]; then pgb_prepared=yes; fi
printf '"bench" "%s"\n' "$password" >"$work/userlist.txt"
cat >"$work/pgbouncer.ini" <<INI
; Written by scripts/bench.sh.
[databases]
bench = host=$PGHOST port=$PGPORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
max_db_connections = $pool_size
max_client_conn = 5000
ignore_startup_parameters = extra_float_digits,options
logfile = $work/pgbouncer.log
log_connections = 0
log_disconnections = 0
INI
[ "$pgb_prepared" = yes ] && echo "max_prepared_statements = 200" >>"$work/pgbouncer.ini"
pgb_user=()
if [ "$(id -u)" -eq 0 ]; then
  # PgBouncer refuses to run as root; -u switches to the postgres account after start-up.
  chown postgres "$work/userlist.txt" "$work/pgbouncer.ini"
  chmod 600 "$work/userlist.txt"
  touch "$work/pgbouncer.log" && chown postgres "$work/pgbouncer.log"
  pgb_user=(-u postgres)
fi
echo "==> starting PgBouncer $pgb_version on 127.0.0.1:$pgb_port"
"$pgbouncer_bin" "${pgb_user[@]}" "$work/pgbouncer.ini" 2>>"$work/pgbouncer.log" &
pgb_pid=$!
pids+=("$pgb_pid")
wait_port "$pgb_port" "$pgb_pid" pgbouncer

dsn() { echo "host=127.0.0.1 port=$1 user=bench password=$password dbname=bench"; }
direct=(--target "direct=$(dsn "$PGPORT")")
sidepool=(--target "sidepool=$(dsn "$sp_port")" --pid "sidepool=$sp_pid")
pgbouncer=(--target "pgbouncer=$(dsn "$pgb_port")" --pid "pgbouncer=$pgb_pid")
if [ -n "${BENCH_BASELINE:-}" ]; then
  baseline=(--target "sidepool-base=$(dsn "$base_port")" --pid "sidepool-base=$base_pid")
fi
# prefer_socket=false: mysql_async would otherwise ask for @@socket and reconnect to the
# server's unix socket, around sidepool.
my_dsn() { echo "mysql://bench:$password@127.0.0.1:$1/bench?prefer_socket=false"; }
my_direct=(--target "direct=$(my_dsn "$MYSQL_PORT")")
my_sidepool=(--target "sidepool=$(my_dsn "$sp_my_port")" --pid "sidepool=$sp_pid")
if [ -n "${BENCH_BASELINE:-}" ]; then
  my_baseline=(--target "sidepool-base=$(my_dsn "$base_my_port")" --pid "sidepool-base=$base_pid")
fi

reports=()
run() { # name, then run arguments
  local name="$1"
  shift
  if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then
    return 0
  fi
  echo "==> $name"
  "$target/sidepool-loadtest" run --rounds "$rounds" --duration "$duration" --warmup "$warmup" \
    --scale "$scale" --json "$work/$name.json" --markdown "$work/$name.md" "$@"
  reports+=("$work/$name.json")
}

# Idle memory first: later runs leave freed buffers in the poolers' allocators, which idle
# clients would reuse and so look cheaper than they are.
run idle --scenario idle --idle-clients "$idle_clients" --clients 50 "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
run select-10 --scenario select --clients 10 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
run select-500 --scenario select --clients 500 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
run tpcb-10 --scenario tpcb --clients 10 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
run tpcb-500 --scenario tpcb --clients 500 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
if [ "$pgb_prepared" = yes ]; then
  run prepared-10 --scenario prepared --clients 10 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}" "${pgbouncer[@]}"
else
  run prepared-10 --scenario prepared --clients 10 "${direct[@]}" "${sidepool[@]}" "${baseline[@]}"
fi

run mysql-select-16 --scenario select --clients 16 --label "MySQL point select, 16 clients" \
  "${my_direct[@]}" "${my_sidepool[@]}" "${my_baseline[@]}"
run mysql-select-256 --scenario select --clients 256 --label "MySQL point select, 256 clients" \
  "${my_direct[@]}" "${my_sidepool[@]}" "${my_baseline[@]}"

mkdir -p bench
"$target/sidepool-loadtest" report --markdown "$work/tables.md" --json bench/results.json \
  --svg bench/chart.svg "${reports[@]}"

model="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
mem_gib="$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
{
  echo "# sidepool benchmark results"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | $(nproc) cores, ${model:-unknown model} |"
  echo "| memory | $mem_gib GiB |"
  echo "| kernel | $(uname -sr) |"
  echo "| PostgreSQL | $("$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //') |"
  echo "| PgBouncer | $pgb_version |"
  echo "| MariaDB | $("$MYSQL_BIN/mariadb" --version | sed 's/.*Distrib \([^,]*\),.*/\1/') |"
  echo "| sidepool | $(git rev-parse --short HEAD 2>/dev/null || echo unknown) |"
  echo
  echo "Everything on one machine over loopback: PostgreSQL (pgbench scale $scale), the poolers"
  echo "and the load generator share the cores. Both poolers run in transaction mode with $pool_size"
  echo "server connections and SCRAM-SHA-256 on both sides. Each table: $rounds round(s) × $duration"
  echo "per target, interleaved, after $warmup warmup; tps is the median over rounds, latency"
  echo "percentiles are over all rounds together, CPU is the pooler process's utime + stime per"
  echo "transaction, peak RSS the largest VmRSS sampled once a second. The \`mysql-*\` tables load"
  echo "MariaDB (pgbench's tables at the same scale) directly and through a sidepool MySQL pool of"
  echo "$pool_size connections with mysql_async over TCP: a point select by primary key as text."
  [ "$pgb_prepared" = yes ] || echo "PgBouncer $pgb_version has no prepared-statement support in transaction mode (1.21+), so it sits out \`prepared\`."
  echo
  cat "$work/tables.md"
  echo "![median tps per target](chart.svg)"
} >bench/results.md
echo "==> wrote bench/results.md, bench/results.json, bench/chart.svg"

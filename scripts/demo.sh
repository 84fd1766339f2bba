#!/usr/bin/env bash
# `make demo`: a throwaway PostgreSQL, sidepool in front of it (config/examples/demo.toml), a
# short pgbench workload through it, and where to look. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d /tmp/sidepool-demo.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

export SIDEPOOL_DEMO_PASSWORD="demo-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"

echo "==> starting a throwaway PostgreSQL"
"$target/sidepool-loadtest" testbed postgres --auth scram --user demo --password "$SIDEPOOL_DEMO_PASSWORD" \
  >"$work/testbed.env" 2>"$work/testbed.log" &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q '^READY=1' "$work/testbed.env" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/testbed.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^READY=1' "$work/testbed.env" || { echo "testbed did not come up" >&2; cat "$work/testbed.log" >&2; exit 1; }
# shellcheck disable=SC1090
. "$work/testbed.env"
echo "    PostgreSQL $PGHOST:$PGPORT (data in $PGDATA)"

sed "s/^primary = .*/primary = \"$PGHOST:$PGPORT\"/" config/examples/demo.toml >"$work/sidepool.toml"
listen=$(sed -n 's/^listen = "\(127\.0\.0\.1:[0-9]*\)".*/\1/p' "$work/sidepool.toml" | tail -n 1)
port=${listen##*:}

echo "==> checking the config"
"$target/sidepool" check --config "$work/sidepool.toml" >/dev/null

echo "==> starting sidepool on $listen"
"$target/sidepool" --config "$work/sidepool.toml" 2>"$work/sidepool.log" &
pids+=($!)
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

export PGPASSWORD="$SIDEPOOL_DEMO_PASSWORD"
echo "==> pgbench: initialising (direct), then 20 clients for 10 s through sidepool"
"$PG_BIN/pgbench" -i -q -s 2 -h "$PGHOST" -p "$PGPORT" -U demo demo >/dev/null 2>&1
"$PG_BIN/pgbench" -c 20 -j 2 -T 10 -n -P 2 -h 127.0.0.1 -p "$port" -U demo demo 2>&1 | sed 's/^/    /'

echo "==> what the server saw: connections of user demo (max_open in demo.toml bounds this)"
"$PG_BIN/psql" -X -At -h "$PGHOST" -p "$PGPORT" -U demo -d demo \
  -c "SELECT count(*) || ' server connections, ' || count(*) FILTER (WHERE state = 'idle') || ' idle' FROM pg_stat_activity WHERE usename = 'demo' AND pid <> pg_backend_pid()" | sed 's/^/    /'

admin="127.0.0.1:9930"   # [admin] listen default; demo.toml does not set it
if command -v curl >/dev/null; then
  echo "==> a few of sidepool's metrics (http://$admin/metrics)"
  curl -fsS "http://$admin/metrics" \
    | grep -E '^sidepool_pool_(saturation_ratio|max_open|connections_opened_total|wait_seconds_count|wait_timeouts_total)' \
    | sed 's/^/    /' || true
fi

cat <<TXT

Where to look:
  metrics:           curl http://$admin/metrics   (pools as JSON: /pools; health: /readyz)
  CPU flamegraph:    curl -o flame.svg "http://$admin/debug/pprof/flamegraph?seconds=10"
  Grafana:           dashboards/sidepool.json and dashboards/alerts.yml (see dashboards/README.md)
  connect yourself:  PGPASSWORD=$SIDEPOOL_DEMO_PASSWORD psql -h 127.0.0.1 -p $port -U demo demo
  sidepool's log:    $work/sidepool.log
  the config:        $work/sidepool.toml (from config/examples/demo.toml)
  the database log:  $PG_LOG
TXT

if [ -t 0 ]; then
  echo
  echo "sidepool keeps running; press Ctrl-C to stop it and remove the database."
  wait "${pids[1]}"
fi

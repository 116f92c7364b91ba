#!/usr/bin/env bash
# A live local rate limiter cluster as plain processes (no Docker): one redis-server, three
# `ratelimiter` nodes with chaos switches on, and a steady `loadgen`; then the operator
# watching it in the foreground. Ctrl-C stops the operator and tears the cluster down.
#
# Env: RL_REDIS_PORT (6390), RL_BASE_PORT (7000: nodes on 7001..7003), OPERATOR_DB
# (operator.db), OPERATOR_INTERVAL (2s), LOAD_RATE (150 req/s).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

redis_port=${RL_REDIS_PORT:-6390}
base=${RL_BASE_PORT:-7000}
db=${OPERATOR_DB:-operator.db}
interval=${OPERATOR_INTERVAL:-2s}
rate=${LOAD_RATE:-150}

# Set-up on a fresh machine: install what the cluster needs from Debian, saying so.
# redis-server brings redis-cli (redis-tools) with it; curl sets the limits below.
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  echo "local.sh: ${need[*]} not installed; installing with apt-get" >&2
  if ! command -v apt-get >/dev/null; then
    echo "local.sh: no apt-get here; install ${need[*]} yourself and run this again" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "local.sh: not root and no sudo; run: apt-get install -y ${need[*]}" >&2
      exit 1
    }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
  echo "local.sh: installed ${need[*]}" >&2
fi
# Debian starts a redis-server service on 6379 after installing; the cluster uses its own
# server on $redis_port, so that one is left alone.

cargo build --release
bin=$root/target/release

logs=$(mktemp -d -t operator-live.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster stopped; logs kept in $logs" >&2
}
trap cleanup EXIT
# The operator gets the same Ctrl-C, finishes its tick and exits; then we tear down.
trap 'exit 130' INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$logs/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
# Ready when our own server answers; if it exits first (port taken), say why.
for _ in $(seq 100); do
  kill -0 "$redis_pid" 2>/dev/null || {
    echo "redis-server could not start on port $redis_port:" >&2
    tail -n 5 "$logs/redis.log" >&2
    exit 1
  }
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

nodes=()
for i in 1 2 3; do
  port=$((base + i))
  "$bin/ratelimiter" --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/" \
    --node-id "node-$i" --policy fail-open --chaos >"$logs/node-$i.log" 2>&1 &
  pids+=($!)
  nodes+=("http://127.0.0.1:$port")
done
list=$(IFS=,; echo "${nodes[*]}")
for n in "${nodes[@]}"; do
  for _ in $(seq 100); do
    curl -fsS "$n/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "$n/healthz" >/dev/null 2>&1 || {
    echo "node $n is not healthy; its log is in $logs" >&2
    exit 1
  }
done
curl -fsS -XPUT "${nodes[0]}/v1/limits/_default" -d '{"limit":50,"window_ms":1000}' >/dev/null

"$bin/loadgen" --target "$list" --rate "$rate" --duration 24h --keys 200 --zipf 1.0 \
  >"$logs/loadgen.log" 2>&1 &
pids+=($!)

cat >&2 <<TXT
cluster up: redis on $redis_port, nodes $list (chaos on), load $rate req/s; logs in $logs
try a fault from another shell, for example:
  kill \$(pgrep -f 'node-id node-2')                          # MON-01
  curl -XPOST ${nodes[0]}/v1/chaos -d '{"redis_latency_ms":150}' # MON-03
  redis-cli -p $redis_port SET rl:w:stuck:1 5                 # MON-06
TXT

"$bin/operator" run --subject ratelimiter \
  --set "nodes=$list" --set "redis=redis://127.0.0.1:$redis_port" \
  --set "log.node-1=file:$logs/node-1.log" --set "log.node-2=file:$logs/node-2.log" \
  --set "log.node-3=file:$logs/node-3.log" \
  --interval "$interval" --db "$db"

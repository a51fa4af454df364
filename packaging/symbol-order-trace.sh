#!/bin/bash
# Regenerates packaging/symbol-order.txt (see packaging/symbol-order.py and build.rs).
#
# usage: packaging/symbol-order-trace.sh
#
# Builds the release binary with a linker map, keeps a fake host of 100 containers from the cycle
# benchmark (`--keep`), and runs the binary under callgrind three times on it: steady `--dry-run`
# daemon cycles (counts zeroed after the first cycle) with a few REST API requests, the daemon
# from its start, and `--once --dry-run`. Needs valgrind (callgrind_control) and curl. Takes a few
# minutes; the host's temporary directory is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'pkill -TERM -f "$work/lxc_autoscale" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo rustc --release --locked --bin lxc_autoscale -- -C "link-arg=-Wl,-Map=$work/map"
cp target/release/lxc_autoscale "$work/lxc_autoscale"
bin="$work/lxc_autoscale"

kept=$(cargo bench --locked --bench cycle -- --n 100 --keep 2>&1 | sed -n 's/.*--config \(\S*\)\/lxc_autoscale.conf.*/\1/p')
[ -d "$kept" ] || { echo "no kept host from the cycle benchmark" >&2; exit 1; }
trap 'pkill -TERM -f "$work/lxc_autoscale" 2>/dev/null || true; rm -rf "$work" "$kept"' EXIT
printf 'min_cores = 2\nmin_memory = 2048\npoll_interval = 1\n' > "$kept/daemon.conf"
cat "$kept/lxc_autoscale.conf" >> "$kept/daemon.conf"
mkdir -p "$kept/run"
log="$kept/var/log/lxc_autoscale.log"
grind=(valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no)

# Runs the daemon under callgrind into $1; with $2 = zero, counts restart after the first cycle.
daemon() {
    cp "$kept/seeded-state.json" "$kept/var/state.json"
    rm -f "$log"
    "${grind[@]}" --callgrind-out-file="$1" "$bin" --dry-run --config "$kept/daemon.conf" \
        > "$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 120); do grep -q "cycle done" "$log" 2>/dev/null && break; sleep 1; done
    if [ "${2:-}" = zero ]; then callgrind_control -z "$pid" > /dev/null; sleep 10; fi
    for path in /health '/resource/lxc/status?lxc_id=101' /containers /routes \
        /resource/node/status /metrics /openapi.json /tasks/1 /nope; do
        curl -s --unix-socket "$kept/run/api.sock" "http://localhost$path" -o /dev/null
    done
    sleep 3
    kill -TERM "$pid"
    wait "$pid" || true
}

daemon "$work/steady" zero
daemon "$work/start"
cp "$kept/seeded-state.json" "$kept/var/state.json"
"${grind[@]}" --callgrind-out-file="$work/once" "$bin" --once --dry-run \
    --config "$kept/lxc_autoscale.conf" > "$work/once.log" 2>&1

python3 packaging/symbol-order.py "$bin" "$work/map" "$work/steady" "$work/start" "$work/once" \
    > "$work/order"
wc -l < "$work/order" | xargs echo "functions listed:"
mv "$work/order" packaging/symbol-order.txt

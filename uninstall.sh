#!/usr/bin/env bash
# Removes what install.sh installed. Config, backups and state are kept unless --purge: the backups
# are what 'lxc_autoscale rollback' restores containers from.
set -euo pipefail

readonly BIN_NAME=lxc_autoscale
readonly UNIT_NAME=lxc_autoscale.service

usage() {
    cat <<'EOF'
Usage: uninstall.sh [OPTIONS]

Stops and disables lxc_autoscale.service and removes the binary, the unit and the logrotate file
installed by install.sh. Keeps /etc/lxc_autoscale and /var/lib/lxc_autoscale (backups, state).

  --purge           also remove /etc/lxc_autoscale, /var/lib/lxc_autoscale (backups and state:
                    no rollback is possible afterwards) and /var/log/lxc_autoscale.{log,json}*
  --prefix DIR      remove below DIR instead of / (also env PREFIX); root is needed only
                    without a prefix
  --no-systemctl    do not call systemctl at all
  -h, --help        show this help
EOF
}

info() { printf 'uninstall.sh: %s\n' "$*"; }
die() {
    printf 'uninstall.sh: error: %s\n' "$*" >&2
    exit 1
}

# Removes each existing path given, saying so.
remove() {
    local p
    for p in "$@"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            rm -rf -- "$p"
            info "removed $p"
        fi
    done
}

main() {
    local prefix="${PREFIX:-}" purge=0 use_systemctl=1
    while [ "$#" -gt 0 ]; do
        case "$1" in
        --purge) purge=1 ;;
        --prefix)
            [ "$#" -ge 2 ] || die "--prefix needs a value"
            prefix="$2"
            shift
            ;;
        --prefix=*) prefix="${1#*=}" ;;
        --no-systemctl) use_systemctl=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option: $1"
            ;;
        esac
        shift
    done
    prefix="${prefix%/}"

    if [ -z "$prefix" ] && [ "${EUID:-$(id -u)}" -ne 0 ]; then
        die "run as root (sudo), or use --prefix DIR"
    fi

    local unit="$prefix/etc/systemd/system/$UNIT_NAME"
    if [ "$use_systemctl" -eq 1 ] && [ -e "$unit" ]; then
        command -v systemctl >/dev/null 2>&1 || die "systemctl not found (--no-systemctl skips it)"
        # Stopping lets a running pct call finish (the unit's KillMode=mixed and TimeoutStopSec).
        systemctl stop "$UNIT_NAME" </dev/null || info "could not stop $UNIT_NAME (not running?)"
        systemctl disable "$UNIT_NAME" </dev/null || info "could not disable $UNIT_NAME"
    fi

    remove "$prefix/usr/local/bin/$BIN_NAME" "$unit" "$prefix/etc/logrotate.d/lxc_autoscale"

    if [ "$use_systemctl" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload </dev/null || info "systemctl daemon-reload failed"
        systemctl reset-failed "$UNIT_NAME" </dev/null 2>/dev/null || true
    fi

    if [ "$purge" -eq 1 ]; then
        remove "$prefix/etc/lxc_autoscale" "$prefix/var/lib/lxc_autoscale" \
            "$prefix/var/lock/lxc_autoscale.lock" "$prefix/run/lxc_autoscale"
        local log
        for log in "$prefix"/var/log/lxc_autoscale.log* "$prefix"/var/log/lxc_autoscale.json*; do
            remove "$log"
        done
        info "purged config, backups, state and logs"
    else
        info "kept $prefix/etc/lxc_autoscale (config) and $prefix/var/lib/lxc_autoscale (backups, state); --purge removes them"
    fi
}

main "$@"

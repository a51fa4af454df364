#!/usr/bin/env bash
# Installs or upgrades lxc_autoscale on a Proxmox VE node. Safe to run again: an existing config is
# backed up and never overwritten, backups and state are never touched.
#
#   sudo ./install.sh                                   # in a checkout: build with cargo, install
#   sudo ./install.sh --binary target/release/lxc_autoscale
#   curl -sSL URL/install.sh | sudo bash -s -- --tarball URL_OR_FILE
#
# Run with --help for every option.
set -euo pipefail

readonly BIN_NAME=lxc_autoscale
readonly UNIT_NAME=lxc_autoscale.service
readonly CONF_NAME=lxc_autoscale.conf
readonly EXAMPLE_NAME=lxc_autoscale.conf.example

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS]

Installs lxc_autoscale: the binary in /usr/local/bin, the config in /etc/lxc_autoscale (kept
if present: backed up, never overwritten), the systemd unit, a logrotate file and
/var/lib/lxc_autoscale/backups; then enables and (re)starts the service. An upgrade leaves a
unit the admin disabled or masked so (restarted only when it runs), and a config that fails
check-config starts and restarts nothing (a running daemon keeps its old binary and config).

Where the binary comes from (default: --from-source when run inside a checkout):
  --from-source          build with 'cargo build --release --locked' in the checkout
  --binary PATH          use a prebuilt binary; unit, logrotate and example config from the checkout
  --tarball PATH_OR_URL  a release tarball holding lxc_autoscale, packaging/ and
                         lxc_autoscale.conf.example (at its top or in one top-level directory)

Other options:
  --prefix DIR           install below DIR instead of / (also env PREFIX); root is needed only
                         without a prefix
  --no-start             install and enable, but do not start or restart the service
  --no-systemctl         do not call systemctl at all (for staging into a prefix)
  -h, --help             show this help

A checkout is found in the current directory or beside this script.
EOF
}

info() { printf 'install.sh: %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# Set by main's option parsing, read by the helpers.
mode=""
tmp_dir=""

set_mode() {
    if [ -n "$mode" ] && [ "$mode" != "$1" ]; then
        die "--$mode and --$1 cannot be combined"
    fi
    mode="$1"
}

need_value() {
    if [ "$2" -lt 2 ]; then
        die "$1 needs a value"
    fi
}

is_checkout() {
    [ -f "$1/Cargo.toml" ] && grep -q '^name = "lxc_autoscale"' "$1/Cargo.toml"
}

# Piped into bash, BASH_SOURCE names no file: only the current directory can be a checkout then.
find_checkout() {
    if is_checkout "$PWD"; then
        printf '%s\n' "$PWD"
        return 0
    fi
    local script="${BASH_SOURCE[0]:-}"
    if [ -n "$script" ] && [ -f "$script" ]; then
        local dir
        dir="$(cd "$(dirname "$script")" && pwd)"
        if is_checkout "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

cleanup() {
    if [ -n "$tmp_dir" ]; then
        rm -rf "$tmp_dir"
    fi
}

make_tmp_dir() {
    if [ -z "$tmp_dir" ]; then
        tmp_dir="$(mktemp -d "${TMPDIR:-/tmp}/lxc_autoscale-install.XXXXXX")"
    fi
}

# Copies $1 to $3 with mode $2 through a temporary file beside it, so a crash or a running daemon
# never sees a half-written file.
install_atomic() {
    local src="$1" mode="$2" dst="$3"
    local tmp="$dst.tmp.$$"
    install -m "$mode" "$src" "$tmp"
    mv -f "$tmp" "$dst"
}

# Enables the unit and starts it, or restarts it when it runs ($2 = 0: neither, for --no-start;
# 2: neither, because the config fails check-config). On an upgrade ($1 = 1) a unit the admin
# disabled or masked is not enabled, and is started only to restart one that runs all the same,
# so that it runs the new binary.
enable_and_start() {
    local had_unit="$1" start="$2" enabled
    enabled="$(systemctl is-enabled "$UNIT_NAME" </dev/null 2>/dev/null || true)"
    local keep_off=0
    if [ "$had_unit" -eq 1 ] && { [ "$enabled" = disabled ] || [ "$enabled" = masked ]; }; then
        keep_off=1
        info "$UNIT_NAME is $enabled: left so (an upgrade does not enable it)"
    else
        systemctl enable "$UNIT_NAME" </dev/null
    fi
    if [ "$start" -eq 0 ]; then
        info "not started (--no-start); start it with: systemctl start $UNIT_NAME"
        return 0
    fi
    if [ "$start" -eq 2 ]; then
        # A restart would stop a working daemon for one that refuses to start (exit 2, which
        # the unit does not retry). A running daemon keeps its old binary and config meanwhile.
        warn "$UNIT_NAME not started or restarted: fix the config, then: systemctl restart $UNIT_NAME"
        return 0
    fi
    # An upgrade must restart a running daemon so that it runs the new binary, also one still in
    # its first cycle ("activating" until READY=1), which 'start' would leave on the old binary.
    local action=start state
    state="$(systemctl is-active "$UNIT_NAME" </dev/null || true)"
    case "$state" in
    active | activating | reloading | refreshing) action=restart ;;
    esac
    if [ "$keep_off" -eq 1 ] && [ "$action" = start ]; then
        info "$UNIT_NAME not started; start it with: systemctl start $UNIT_NAME"
        return 0
    fi
    systemctl "$action" "$UNIT_NAME" </dev/null ||
        die "systemctl $action $UNIT_NAME failed; see: journalctl -u $UNIT_NAME"
    info "${action}ed $UNIT_NAME; see 'systemctl status $UNIT_NAME' and 'lxc_autoscale status'"
}

# Everything runs from main, called on the last line: piped into bash (curl ... | bash), the whole
# script is read before anything runs, so a truncated download runs nothing and no child process
# can swallow the rest of the script from its stdin.
main() {
    local prefix="${PREFIX:-}" source_arg="" start=1 use_systemctl=1

    while [ "$#" -gt 0 ]; do
        case "$1" in
        --from-source) set_mode from-source ;;
        --binary)
            need_value "$1" "$#"
            set_mode binary
            source_arg="$2"
            shift
            ;;
        --binary=*)
            set_mode binary
            source_arg="${1#*=}"
            ;;
        --tarball)
            need_value "$1" "$#"
            set_mode tarball
            source_arg="$2"
            shift
            ;;
        --tarball=*)
            set_mode tarball
            source_arg="${1#*=}"
            ;;
        --prefix)
            need_value "$1" "$#"
            prefix="$2"
            shift
            ;;
        --prefix=*) prefix="${1#*=}" ;;
        --no-start) start=0 ;;
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

    # A trailing slash would only double the separators in every path below.
    prefix="${prefix%/}"
    local bin_dir="$prefix/usr/local/bin"
    local etc_dir="$prefix/etc/lxc_autoscale"
    local unit_dir="$prefix/etc/systemd/system"
    local logrotate_dir="$prefix/etc/logrotate.d"
    local lib_dir="$prefix/var/lib/lxc_autoscale"

    if [ -z "$prefix" ] && [ "${EUID:-$(id -u)}" -ne 0 ]; then
        die "run as root (sudo), or use --prefix DIR to install below a directory"
    fi

    trap cleanup EXIT

    local checkout
    checkout="$(find_checkout || true)"
    if [ -z "$mode" ]; then
        if [ -n "$checkout" ]; then
            mode=from-source
        else
            die "no checkout found: use --tarball URL_OR_FILE or run inside a checkout"
        fi
    fi

    # binary: the file to install; asset_dir: holds packaging/ and the example config.
    local binary="" asset_dir=""
    case "$mode" in
    from-source)
        [ -n "$checkout" ] || die "--from-source needs a checkout: run inside one, or use --tarball"
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found: install Rust, or build as your user ('cargo build --release') and run 'sudo ./install.sh --binary target/release/$BIN_NAME'"
        info "building in $checkout (cargo build --release --locked)"
        (cd "$checkout" && cargo build --release --locked </dev/null)
        binary="${CARGO_TARGET_DIR:-$checkout/target}/release/$BIN_NAME"
        asset_dir="$checkout"
        ;;
    binary)
        [ -n "$checkout" ] || die "--binary takes the unit and example config from a checkout, and none was found"
        binary="$source_arg"
        asset_dir="$checkout"
        ;;
    tarball)
        make_tmp_dir
        local archive="$source_arg"
        case "$source_arg" in
        http://* | https://* | ftp://* | file://*)
            command -v curl >/dev/null 2>&1 || die "curl is needed to download $source_arg"
            info "downloading $source_arg"
            archive="$tmp_dir/release.tar.gz"
            curl -fsSL "$source_arg" -o "$archive" || die "cannot download $source_arg"
            ;;
        esac
        [ -f "$archive" ] || die "tarball not found: $archive"
        mkdir "$tmp_dir/unpacked"
        tar -xf "$archive" -C "$tmp_dir/unpacked" || die "cannot unpack $source_arg"
        asset_dir="$tmp_dir/unpacked"
        if [ ! -f "$asset_dir/$BIN_NAME" ]; then
            # Release tarballs usually wrap everything in one directory (lxc_autoscale-1.2.3/).
            local d
            for d in "$tmp_dir"/unpacked/*/; do
                if [ -f "$d$BIN_NAME" ]; then
                    asset_dir="${d%/}"
                    break
                fi
            done
        fi
        binary="$asset_dir/$BIN_NAME"
        [ -f "$binary" ] || die "$source_arg holds no $BIN_NAME binary (at its top or in one top-level directory)"
        ;;
    esac

    [ -f "$binary" ] || die "binary not found: $binary"
    local f
    for f in packaging/lxc_autoscale.service packaging/logrotate "$EXAMPLE_NAME"; do
        [ -f "$asset_dir/$f" ] ||
            die "$f is missing from $asset_dir: a tarball must include packaging/ and $EXAMPLE_NAME"
    done

    # An arch mismatch or a truncated download should stop here, before anything is replaced.
    local version
    version="$("$binary" --version 2>&1 </dev/null)" || die "$binary does not run on this machine: $version"
    info "installing $version"

    if [ -e "$prefix/usr/bin/$BIN_NAME" ]; then
        warn "$prefix/usr/bin/$BIN_NAME exists (the Debian package?): the unit installed here in /etc/systemd/system overrides the package's"
    fi

    install -d -m 0755 "$bin_dir" "$unit_dir" "$logrotate_dir"
    # install -d would also chmod an existing directory: the admin's mode for it stays.
    if [ ! -d "$etc_dir" ]; then
        install -d -m 0755 "$etc_dir"
    fi
    install -d -m 0700 "$lib_dir" "$lib_dir/backups"

    install_atomic "$binary" 0755 "$bin_dir/$BIN_NAME"
    info "installed $bin_dir/$BIN_NAME"

    local config="$etc_dir/$CONF_NAME"
    if [ -L "$config" ] && [ ! -e "$config" ]; then
        # Its target may be on a file system not mounted yet: the link is the user's config.
        warn "$config is a symlink to a missing file: kept as it is"
    elif [ -e "$config" ]; then
        local stamp backup n=1
        stamp="$(date +%Y%m%d-%H%M%S)"
        backup="$config.$stamp.backup"
        while [ -e "$backup" ]; do
            backup="$config.$stamp-$n.backup"
            n=$((n + 1))
        done
        # The config may hold a gotify token: the copy is as private as the original should be.
        install -m 0600 "$config" "$backup"
        info "kept $config (backed up to $backup)"
    else
        install_atomic "$asset_dir/$EXAMPLE_NAME" 0600 "$config"
        info "installed $config from the example"
    fi
    install_atomic "$asset_dir/$EXAMPLE_NAME" 0644 "$etc_dir/$EXAMPLE_NAME"
    info "the current example with every key is $etc_dir/$EXAMPLE_NAME"

    local check_output
    if check_output="$("$bin_dir/$BIN_NAME" check-config --config "$config" 2>&1 </dev/null)"; then
        info "config check passed"
    else
        warn "$config does not pass 'lxc_autoscale check-config'; the service refuses to start until it is fixed:"
        printf '%s\n' "$check_output" >&2
        if [ "$start" -eq 1 ]; then
            start=2
        fi
    fi

    # An upgrade keeps the admin's choice: a unit disabled or masked stays so (as with the package).
    local had_unit=0
    if [ -e "$unit_dir/$UNIT_NAME" ]; then
        had_unit=1
    fi
    install_atomic "$asset_dir/packaging/lxc_autoscale.service" 0644 "$unit_dir/$UNIT_NAME"
    install_atomic "$asset_dir/packaging/logrotate" 0644 "$logrotate_dir/lxc_autoscale"
    info "installed $unit_dir/$UNIT_NAME and $logrotate_dir/lxc_autoscale"

    if [ "$use_systemctl" -eq 0 ]; then
        info "not calling systemctl (--no-systemctl)"
        return 0
    fi
    command -v systemctl >/dev/null 2>&1 ||
        die "systemctl not found: the service was not enabled (--no-systemctl skips this step)"

    systemctl daemon-reload </dev/null
    enable_and_start "$had_unit" "$start"
}

main "$@"

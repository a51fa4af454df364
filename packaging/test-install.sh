#!/usr/bin/env bash
# Tests install.sh and uninstall.sh in a temporary prefix, with a stub systemctl that records its
# arguments. Builds nothing: pass an already-built binary (any profile works).
#
#   packaging/test-install.sh [BINARY]     # default: target/release/lxc_autoscale
#
# Needs no root and changes nothing outside a temporary directory.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/target/release/lxc_autoscale}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
    echo "test-install.sh: no executable at $bin: build it first (cargo build --release)" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/lxc_autoscale-test-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mkdir "$work/stub"
cat >"$work/stub/systemctl" <<'EOF'
#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
if [ "$1" = is-active ]; then
    # As systemctl: prints the state; exit 0 only for active (and reloading).
    case "${STUB_ACTIVE:-0}" in
    1) echo active && exit 0 ;;
    activating) echo activating && exit 3 ;;
    esac
    echo inactive
    exit 3
fi
if [ "$1" = is-enabled ]; then
    echo "${STUB_ENABLED:-enabled}"
    [ "${STUB_ENABLED:-enabled}" = enabled ] && exit 0
    exit 1
fi
exit 0
EOF
chmod +x "$work/stub/systemctl"
export PATH="$work/stub:$PATH"
export SYSTEMCTL_LOG="$work/systemctl.log"
# The scripts must take the prefix from their options here, not from the caller's environment.
unset PREFIX

passed=0
failed=0
check() {
    local what="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what"
    fi
}
mode_of() { stat -c %a "$1"; }
has_mode() { [ -e "$2" ] && [ "$(mode_of "$2")" = "$1" ]; }
logged() { grep -qx -- "$1" "$SYSTEMCTL_LOG"; }
line_of() { grep -nx -- "$1" "$SYSTEMCTL_LOG" | head -n1 | cut -d: -f1; }
before() {
    local a b
    a="$(line_of "$1")" b="$(line_of "$2")"
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}
in_order() { before "$1" "$2" && before "$2" "$3"; }
not_logged() { ! logged "$1"; }
not_grep() { ! grep -q -- "$1" "$2"; }
is_backup_name() { [[ "$1" =~ lxc_autoscale\.conf\.[0-9]{8}-[0-9]{6}(-[0-9]+)?\.backup$ ]]; }
count_backups() {
    find "$1/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' | wc -l
}
# Runs a script from a directory that is no checkout, output to $work/out.
run_in() {
    local dir="$1"
    shift
    (cd "$dir" && "$@") >"$work/out" 2>&1
}

example="$repo/lxc_autoscale.conf.example"
unit_src="$repo/packaging/lxc_autoscale.service"
mkdir "$work/elsewhere"

echo "== fresh install from a tarball, script piped into bash (as with curl | bash)"
mkdir -p "$work/rel/lxc_autoscale-0.1.0/packaging"
cp "$bin" "$work/rel/lxc_autoscale-0.1.0/lxc_autoscale"
cp "$repo/packaging/lxc_autoscale.service" "$repo/packaging/logrotate" "$work/rel/lxc_autoscale-0.1.0/packaging/"
cp "$example" "$work/rel/lxc_autoscale-0.1.0/"
tar czf "$work/release.tar.gz" -C "$work/rel" lxc_autoscale-0.1.0
p="$work/root"
: >"$SYSTEMCTL_LOG"
run_in "$work/elsewhere" bash -s -- --tarball "$work/release.tar.gz" --prefix "$p" <"$repo/install.sh"
check "piped tarball install exits 0" [ $? -eq 0 ]
check "binary installed" cmp -s "$bin" "$p/usr/local/bin/lxc_autoscale"
check "binary executable, mode 755" has_mode 755 "$p/usr/local/bin/lxc_autoscale"
check "config is the example" cmp -s "$example" "$p/etc/lxc_autoscale/lxc_autoscale.conf"
check "config mode 600" has_mode 600 "$p/etc/lxc_autoscale/lxc_autoscale.conf"
check "example copy beside the config" cmp -s "$example" "$p/etc/lxc_autoscale/lxc_autoscale.conf.example"
check "no config backup on a fresh install" [ "$(count_backups "$p")" -eq 0 ]
check "unit installed" cmp -s "$unit_src" "$p/etc/systemd/system/lxc_autoscale.service"
check "unit mode 644" has_mode 644 "$p/etc/systemd/system/lxc_autoscale.service"
check "logrotate installed" cmp -s "$repo/packaging/logrotate" "$p/etc/logrotate.d/lxc_autoscale"
check "logrotate mode 644" has_mode 644 "$p/etc/logrotate.d/lxc_autoscale"
check "state dir mode 700" has_mode 700 "$p/var/lib/lxc_autoscale"
check "backups dir mode 700" has_mode 700 "$p/var/lib/lxc_autoscale/backups"
check "config check passed" grep -q "config check passed" "$work/out"
check "no temporary files left" [ -z "$(find "$p" -name '*.tmp.*')" ]
check "systemctl daemon-reload" logged "daemon-reload"
check "systemctl enable" logged "enable lxc_autoscale.service"
check "systemctl start (not running before)" logged "start lxc_autoscale.service"
check "daemon-reload before enable before start" \
    in_order daemon-reload "enable lxc_autoscale.service" "start lxc_autoscale.service"

echo "== install from a tarball URL (file://, fetched with curl)"
u="$work/url-root"
if command -v curl >/dev/null 2>&1; then
    mkdir "$work/tmp"
    TMPDIR="$work/tmp" run_in "$work/elsewhere" bash -s -- --tarball "file://$work/release.tar.gz" --prefix "$u" --no-start <"$repo/install.sh"
    check "tarball URL install exits 0" [ $? -eq 0 ]
    check "binary installed from the URL" cmp -s "$bin" "$u/usr/local/bin/lxc_autoscale"
    check "download and unpacked files removed afterwards" [ -z "$(ls -A "$work/tmp")" ]
else
    echo "(curl not installed: URL case skipped)"
fi

echo "== upgrade in checkout mode (--binary) with a user-edited config and existing state"
cfg="$p/etc/lxc_autoscale/lxc_autoscale.conf"
# Edited in place: a key appended at the end would land in the example's last [section].
sed -e 's/^poll_interval = 300$/poll_interval = 120/' -e 's/^ignore_lxc = \[\]$/ignore_lxc = [105]/' \
    "$example" >"$cfg"
printf '# edited by hand, kept byte for byte\n' >>"$cfg"
chmod 600 "$cfg"
cp "$cfg" "$work/user.conf"
echo "stale example" >"$p/etc/lxc_autoscale/lxc_autoscale.conf.example"
printf '#!/bin/sh\necho old\n' >"$p/usr/local/bin/lxc_autoscale"
mkdir -p "$p/var/lib/lxc_autoscale/backups/101"
echo '{"vmid":101}' >"$p/var/lib/lxc_autoscale/backups/101/20260101T000000Z.json"
echo '{"containers":{}}' >"$p/var/lib/lxc_autoscale/state.json"
: >"$SYSTEMCTL_LOG"
STUB_ACTIVE=1 run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p"
check "checkout install exits 0" [ $? -eq 0 ]
check "binary replaced" cmp -s "$bin" "$p/usr/local/bin/lxc_autoscale"
check "edited config kept byte for byte" cmp -s "$work/user.conf" "$cfg"
check "edited config still mode 600" has_mode 600 "$cfg"
check "one config backup" [ "$(count_backups "$p")" -eq 1 ]
backup="$(find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' | head -n1)"
check "backup name has a timestamp" is_backup_name "$backup"
check "backup identical to the edited config" cmp -s "$work/user.conf" "$backup"
check "backup mode 600" has_mode 600 "$backup"
check "example copy refreshed" cmp -s "$example" "$p/etc/lxc_autoscale/lxc_autoscale.conf.example"
check "edited config passes check-config" grep -q "config check passed" "$work/out"
check "systemctl restart (running before)" logged "restart lxc_autoscale.service"
check "no plain start when running" not_logged "start lxc_autoscale.service"
check "rollback backups kept" [ -f "$p/var/lib/lxc_autoscale/backups/101/20260101T000000Z.json" ]
check "state kept" grep -q containers "$p/var/lib/lxc_autoscale/state.json"

echo "== upgrade while the daemon is still starting (its first cycle): restarted on the new binary"
check "one config backup before" [ "$(count_backups "$p")" -eq 1 ]
: >"$SYSTEMCTL_LOG"
STUB_ACTIVE=activating run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p"
check "install during activation exits 0" [ $? -eq 0 ]
check "systemctl restart (activating before)" logged "restart lxc_autoscale.service"
check "no plain start when activating" not_logged "start lxc_autoscale.service"
# The later checks count the backups of the installs before and after this one.
find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' ! -samefile "$backup" -delete

echo "== upgrade of a unit the admin disabled (or masked): not re-enabled, not started"
for how in disabled masked; do
    : >"$SYSTEMCTL_LOG"
    STUB_ENABLED=$how run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p"
    check "upgrade of a $how unit exits 0" [ $? -eq 0 ]
    check "a $how unit is not enabled" not_logged "enable lxc_autoscale.service"
    check "a $how unit is not started" not_grep "start lxc_autoscale.service" "$SYSTEMCTL_LOG"
    check "and the output says why" grep -q "lxc_autoscale.service is $how: left so" "$work/out"
    # A disabled daemon that runs all the same is restarted on the new binary.
    : >"$SYSTEMCTL_LOG"
    STUB_ENABLED=$how STUB_ACTIVE=1 run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p"
    check "a running $how unit is restarted" logged "restart lxc_autoscale.service"
    check "and still not enabled" not_logged "enable lxc_autoscale.service"
done
find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' ! -samefile "$backup" -delete

echo "== an upgrade keeps the mode the admin gave the config directory"
chmod 750 "$p/etc/lxc_autoscale"
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p" --no-start
check "upgrade with a 750 config directory exits 0" [ $? -eq 0 ]
check "config directory still mode 750" has_mode 750 "$p/etc/lxc_autoscale"
chmod 755 "$p/etc/lxc_autoscale"
find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' ! -samefile "$backup" -delete

echo "== reinstall: a second backup, nothing lost"
: >"$SYSTEMCTL_LOG"
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p" --no-start
check "reinstall exits 0" [ $? -eq 0 ]
check "two config backups with distinct names" [ "$(count_backups "$p")" -eq 2 ]
check "config still the edited one" cmp -s "$work/user.conf" "$cfg"
check "rollback backups kept across reinstall" [ -f "$p/var/lib/lxc_autoscale/backups/101/20260101T000000Z.json" ]
check "state kept across reinstall" [ -f "$p/var/lib/lxc_autoscale/state.json" ]
check "--no-start still enables" logged "enable lxc_autoscale.service"
check "--no-start neither starts nor restarts" not_grep "start lxc_autoscale.service" "$SYSTEMCTL_LOG"

echo "== an invalid existing config warns but does not fail, and is kept"
cp "$cfg" "$work/good.conf"
echo 'poll_intervall = 5' >>"$cfg"
cp "$cfg" "$work/bad.conf"
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p" --no-start
check "install with a bad config exits 0" [ $? -eq 0 ]
check "warning names check-config" grep -q "does not pass 'lxc_autoscale check-config'" "$work/out"
check "bad config kept as it was" cmp -s "$work/bad.conf" "$cfg"
# Without --no-start: a running daemon is not restarted into a refusal (exit 2, never retried).
find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' | sort >"$work/backups.before"
: >"$SYSTEMCTL_LOG"
STUB_ACTIVE=1 run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p"
check "upgrade with a bad config exits 0" [ $? -eq 0 ]
check "a running daemon is not restarted onto a bad config" not_grep "start lxc_autoscale.service" "$SYSTEMCTL_LOG"
check "still enabled" logged "enable lxc_autoscale.service"
check "and the output says what to do" grep -q "lxc_autoscale.service not started or restarted: fix the config, then: systemctl restart lxc_autoscale.service" "$work/out"
# The later checks count the backups made before this install.
find "$p/etc/lxc_autoscale" -maxdepth 1 -name 'lxc_autoscale.conf.*.backup' | sort |
    comm -13 "$work/backups.before" - | xargs -r rm --
cp "$work/good.conf" "$cfg"

echo "== a config that is a symlink to a missing file (not mounted yet) is kept, not replaced"
mv "$cfg" "$work/linked.conf"
ln -s "$work/not-mounted/lxc_autoscale.conf" "$cfg"
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p" --no-start
check "install with a dangling config symlink exits 0" [ $? -eq 0 ]
check "the config symlink is kept" [ "$(readlink "$cfg")" = "$work/not-mounted/lxc_autoscale.conf" ]
check "and the warning names it" grep -q "$cfg is a symlink to a missing file: kept as it is" "$work/out"
rm "$cfg"
mv "$work/linked.conf" "$cfg"

echo "== refusals"
q="$work/refused"
run_in "$work/elsewhere" bash -s -- --prefix "$q" <"$repo/install.sh"
check "piped without a checkout or tarball fails" [ $? -ne 0 ]
check "and says so" grep -q "no checkout found: use --tarball URL_OR_FILE or run inside a checkout" "$work/out"
mkdir -p "$work/bare"
cp "$bin" "$work/bare/lxc_autoscale"
tar czf "$work/bare.tar.gz" -C "$work/bare" lxc_autoscale
run_in "$work/elsewhere" "$repo/install.sh" --tarball "$work/bare.tar.gz" --prefix "$q" --no-systemctl
check "tarball without packaging/ fails" [ $? -ne 0 ]
check "and names what is missing" grep -q "packaging/lxc_autoscale.service is missing" "$work/out"
check "nothing installed by a refused install" [ ! -e "$q/usr/local/bin/lxc_autoscale" ]
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --tarball "$work/release.tar.gz" --prefix "$q"
check "--binary with --tarball fails" [ $? -ne 0 ]
run_in "$work/elsewhere" "$repo/install.sh" --bogus
check "unknown option fails" [ $? -ne 0 ]
run_in "$work/elsewhere" "$repo/install.sh" --help
check "--help exits 0" [ $? -eq 0 ]

echo "== uninstall keeps config, backups and state"
mkdir -p "$p/var/log"
echo log >"$p/var/log/lxc_autoscale.log"
echo old >"$p/var/log/lxc_autoscale.log.1.gz"
echo '{}' >"$p/var/log/lxc_autoscale.json"
echo other >"$p/var/log/syslog"
: >"$SYSTEMCTL_LOG"
run_in "$work/elsewhere" "$repo/uninstall.sh" --prefix "$p"
check "uninstall exits 0" [ $? -eq 0 ]
check "binary removed" [ ! -e "$p/usr/local/bin/lxc_autoscale" ]
check "unit removed" [ ! -e "$p/etc/systemd/system/lxc_autoscale.service" ]
check "logrotate removed" [ ! -e "$p/etc/logrotate.d/lxc_autoscale" ]
check "config kept" cmp -s "$work/good.conf" "$cfg"
check "config backups kept" [ "$(count_backups "$p")" -eq 3 ]
check "rollback backups kept" [ -f "$p/var/lib/lxc_autoscale/backups/101/20260101T000000Z.json" ]
check "state kept" [ -f "$p/var/lib/lxc_autoscale/state.json" ]
check "logs kept" [ -f "$p/var/log/lxc_autoscale.log" ]
check "systemctl stop" logged "stop lxc_autoscale.service"
check "systemctl disable" logged "disable lxc_autoscale.service"
check "systemctl daemon-reload after removal" logged "daemon-reload"

echo "== uninstall --purge removes config, backups, state and logs"
run_in "$work/elsewhere" "$repo/install.sh" --binary "$bin" --prefix "$p" --no-start
run_in "$work/elsewhere" "$repo/uninstall.sh" --prefix "$p" --purge
check "purge exits 0" [ $? -eq 0 ]
check "config dir removed" [ ! -e "$p/etc/lxc_autoscale" ]
check "state and backups removed" [ ! -e "$p/var/lib/lxc_autoscale" ]
check "text log and rotated logs removed" [ -z "$(find "$p/var/log" -name 'lxc_autoscale.log*')" ]
check "event log removed" [ ! -e "$p/var/log/lxc_autoscale.json" ]
check "other logs untouched" [ -f "$p/var/log/syslog" ]
check "binary removed by purge" [ ! -e "$p/usr/local/bin/lxc_autoscale" ]

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

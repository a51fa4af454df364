#!/usr/bin/env bash
# Checks the Debian package built by cargo-deb: file list, modes, conffiles, control fields, unit
# and maintainer scripts. Builds nothing: run `cargo deb` (or `cargo deb --no-build` after placing
# a binary at target/release/lxc_autoscale) first.
#
#   packaging/test-deb.sh [--install] [DEB]   # default: the newest target/debian/lxc-autoscale_*.deb
#
# --install also installs, removes and purges the package with dpkg on this machine (root only,
# and only where lxc-autoscale is not installed): for a throwaway machine or container.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
do_install=0
if [ "${1:-}" = --install ]; then
    do_install=1
    shift
fi
deb="${1:-}"
if [ -z "$deb" ]; then
    # shellcheck disable=SC2012 # names are cargo-deb's, without spaces or newlines
    deb="$(ls -t "$repo"/target/debian/lxc-autoscale_*.deb 2>/dev/null | head -n1)"
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "test-deb.sh: no .deb found: build it first (cargo deb)" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/lxc_autoscale-test-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT

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
# A line of `dpkg-deb -c` for PATH (./-relative) with permissions PERMS.
listed() { grep -Eq "^$2 .* \\./$1\$" "$work/contents"; }
not_in() { ! grep -q -- "$1" "$2"; }
all_root() { ! grep -vq ' 0/0 ' "$work/contents"; }
# The install unit and the package unit must stay the same apart from comments and the binary path.
units_agree() {
    diff <(grep -v '^#' "$repo/packaging/lxc_autoscale.service" | sed 's#/usr/local/bin/#/usr/bin/#') \
        <(grep -v '^#' "$work/root/usr/lib/systemd/system/lxc_autoscale.service") >/dev/null
}

echo "== $deb"
dpkg-deb -c "$deb" >"$work/contents"
dpkg-deb -I "$deb" >"$work/info"
dpkg-deb -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/control"

check "binary at /usr/bin, mode 755" listed "usr/bin/lxc_autoscale" "-rwxr-xr-x"
check "unit in /usr/lib/systemd/system, mode 644" listed "usr/lib/systemd/system/lxc_autoscale.service" "-rw-r--r--"
check "config at /etc/lxc_autoscale, mode 600" listed "etc/lxc_autoscale/lxc_autoscale.conf" "-rw-------"
check "logrotate file, mode 644" listed "etc/logrotate.d/lxc_autoscale" "-rw-r--r--"
check "example config in the docs" listed "usr/share/doc/lxc-autoscale/lxc_autoscale.conf.example" "-rw-r--r--"
check "README in the docs" listed "usr/share/doc/lxc-autoscale/README.md" "-rw-r--r--"
check "copyright file" listed "usr/share/doc/lxc-autoscale/copyright" "-rw-r--r--"
check "nothing under /usr/local" not_in "./usr/local" "$work/contents"
check "files owned by root" all_root

check "dpkg-deb -I lists conffiles" grep -Eq '^ +[0-9]+ bytes, +[0-9]+ lines +conffiles' "$work/info"
check "config is a conffile" grep -qx "/etc/lxc_autoscale/lxc_autoscale.conf" "$work/control/conffiles"
check "logrotate file is a conffile" grep -qx "/etc/logrotate.d/lxc_autoscale" "$work/control/conffiles"
check "package name" grep -qx "Package: lxc-autoscale" "$work/control/control"
check "section admin" grep -qx "Section: admin" "$work/control/control"
check "depends on init-system-helpers (maintainer scripts)" grep -Eq "^Depends: .*init-system-helpers" "$work/control/control"

check "shipped config is the example" cmp -s "$repo/lxc_autoscale.conf.example" "$work/root/etc/lxc_autoscale/lxc_autoscale.conf"
check "shipped logrotate is packaging/logrotate" cmp -s "$repo/packaging/logrotate" "$work/root/etc/logrotate.d/lxc_autoscale"
check "shipped unit is packaging/deb's" cmp -s "$repo/packaging/deb/lxc_autoscale.service" "$work/root/usr/lib/systemd/system/lxc_autoscale.service"
check "unit runs /usr/bin/lxc_autoscale" grep -qx "ExecStart=/usr/bin/lxc_autoscale --config /etc/lxc_autoscale/lxc_autoscale.conf" \
    "$work/root/usr/lib/systemd/system/lxc_autoscale.service"
check "package unit matches the install unit but for the binary path" units_agree

for s in postinst prerm postrm; do
    check "$s shipped and executable" [ -x "$work/control/$s" ]
    check "$s is valid sh" sh -n "$work/control/$s"
    check "$s is packaging/deb/$s" cmp -s "$repo/packaging/deb/$s" "$work/control/$s"
    if command -v shellcheck >/dev/null 2>&1; then
        check "$s passes shellcheck" shellcheck -s sh "$work/control/$s"
    fi
done
check "postinst enables the unit" grep -qF "deb-systemd-helper enable \"\$UNIT\"" "$work/control/postinst"
check "prerm stops only on remove" grep -qF "\"\$1\" = remove" "$work/control/prerm"
check "postrm purges state" grep -q "rm -rf /var/lib/lxc_autoscale" "$work/control/postrm"

if [ "$do_install" -eq 1 ]; then
    echo "== dpkg install, remove, purge on this machine"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test-deb.sh: --install needs root" >&2
        exit 2
    fi
    if dpkg -s lxc-autoscale >/dev/null 2>&1 || [ -e /usr/bin/lxc_autoscale ] || [ -e /etc/lxc_autoscale ]; then
        echo "test-deb.sh: lxc-autoscale or its files are already on this machine; --install refuses to touch them" >&2
        exit 2
    fi
    wants=/etc/systemd/system/multi-user.target.wants/lxc_autoscale.service
    dpkg -i "$deb" >"$work/dpkg.out" 2>&1
    check "dpkg -i succeeds" [ $? -eq 0 ]
    check "installed binary runs" eval '/usr/bin/lxc_autoscale --version >/dev/null'
    check "unit enabled" [ -L "$wants" ]
    check "installed config mode 600" [ "$(stat -c %a /etc/lxc_autoscale/lxc_autoscale.conf)" = 600 ]
    check "backups dir created, mode 700" [ "$(stat -c %a /var/lib/lxc_autoscale/backups)" = 700 ]
    echo "# local edit" >>/etc/lxc_autoscale/lxc_autoscale.conf
    mkdir -p /var/lib/lxc_autoscale/backups/101
    echo '{}' >/var/lib/lxc_autoscale/backups/101/keep.json
    dpkg -r lxc-autoscale >>"$work/dpkg.out" 2>&1
    check "dpkg -r succeeds" [ $? -eq 0 ]
    check "remove deletes the binary" [ ! -e /usr/bin/lxc_autoscale ]
    check "remove keeps the edited config" grep -q "# local edit" /etc/lxc_autoscale/lxc_autoscale.conf
    check "remove keeps backups" [ -f /var/lib/lxc_autoscale/backups/101/keep.json ]
    dpkg -P lxc-autoscale >>"$work/dpkg.out" 2>&1
    check "dpkg -P succeeds" [ $? -eq 0 ]
    check "purge deletes the config" [ ! -e /etc/lxc_autoscale ]
    check "purge deletes backups and state" [ ! -e /var/lib/lxc_autoscale ]
    check "purge removes the enablement link" [ ! -L "$wants" ]
    if [ "$failed" -ne 0 ]; then
        cat "$work/dpkg.out"
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# check-units.sh UNITDIR BUILDDIR: `systemd-analyze verify` passes on the
# built units, their ExecStart pointed at this build's binaries (verify
# checks that they exist). Skips (77) without systemd-analyze.
set -euo pipefail
unitdir=$1 build=$2
command -v systemd-analyze >/dev/null || { echo "skip: no systemd-analyze"; exit 77; }
tmp=$(mktemp -d /tmp/xmem-units-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for u in memd.service memd.socket xmem-appliance.service; do
        sed -e "s|^ExecStart=.*/memd|ExecStart=$build/memd/memd|" \
            -e "s|^ExecStart=.*/xmem-appliance|ExecStart=$build/appliance/xmem-appliance|" \
            "$unitdir/$u" >"$tmp/$u"
done
grep -q "^ExecStart=$build/" "$tmp/memd.service" || { echo "not ok: no ExecStart in memd.service"; exit 1; }
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$tmp"/memd.service \
        "$tmp"/memd.socket "$tmp"/xmem-appliance.service 2>&1) || { echo "not ok: $out"; exit 1; }
# verify warns (and still exits 0) on unknown settings: none allowed
if [[ -n $out ]]; then
        echo "not ok: systemd-analyze verify says: $out"; exit 1
fi
echo "ok: systemd-analyze verify: memd.service memd.socket xmem-appliance.service"

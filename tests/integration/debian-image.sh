#!/bin/sh
# debian-image.sh SUITE [systemd]: prints the path of a cached Debian SUITE
# minbase rootfs with python3 (/var/cache/xmem-test/SUITE-minbase, or
# $XMEM_IMAGE_CACHE), debootstrapping it once when missing (a few minutes).
# With "systemd": SUITE-systemd instead, with systemd as init and the
# libraries xmem's packages need, for booting with systemd-nspawn.
# Exit 77 when it cannot be built because the package registry does not serve
# SUITE (the caller skips, saying so); 1 on any other failure.
set -eu
suite=$1
cache=${XMEM_IMAGE_CACHE:-/var/cache/xmem-test}
mirror=${XMEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
variant=minbase include=python3-minimal has=usr/bin/python3
if [ "${2:-}" = systemd ]; then
        variant=systemd has=lib/systemd/systemd
        include=systemd,systemd-sysv,dbus,libjson-c5,libcap2,libseccomp2,libsystemd0,libssl3
fi
dir=$cache/$suite-$variant
[ -x "$dir/$has" ] && { echo "$dir"; exit 0; }
mkdir -p "$cache"
exec 9>"$cache/.$suite-$variant.lock"
flock 9 # another test run may be building it
[ -x "$dir/$has" ] && { echo "$dir"; exit 0; }
if ! command -v debootstrap >/dev/null; then
        echo "debian-image.sh: debootstrap is not installed (scripts/deps.sh)" >&2
        exit 1
fi
if ! curl -fsS --max-time 30 -o /dev/null "$mirror/dists/$suite/Release" 2>/dev/null &&
   ! wget -q -T 30 -O /dev/null "$mirror/dists/$suite/Release" 2>/dev/null; then
        echo "debian-image.sh: $mirror does not serve $suite" >&2
        exit 77
fi
tmp=$(mktemp -d "$cache/gs-$suite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! debootstrap --variant=minbase --include="$include" "$suite" "$tmp/root" "$mirror" \
        >"$tmp/log" 2>&1; then
        tail -5 "$tmp/log" >&2
        exit 1
fi
rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
mv "$tmp/root" "$dir"
echo "$dir"

#!/bin/sh
# mkrootfs.sh DIR PROGRAM...: a tiny container rootfs: busybox-static (sh and
# the applets), each PROGRAM in /bin and the shared libraries they (and the
# xmem shim, when $XMEM_SHIM is set) need, with the dynamic loader.
set -eu
dir=$1; shift
busybox=$(command -v busybox)
mkdir -p "$dir/bin" "$dir/etc" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/tmp" "$dir/run"
cp "$busybox" "$dir/bin/busybox"
for a in sh ls cat echo sleep true false grep; do ln -sf busybox "$dir/bin/$a"; done
libs=""
for p in "$@"; do
        cp "$p" "$dir/bin/"
        libs="$libs $p"
done
[ -n "${XMEM_SHIM:-}" ] && [ -f "$XMEM_SHIM" ] && libs="$libs $XMEM_SHIM"
for f in $libs; do
        ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}'
done | sort -u | while read -r lib; do
        mkdir -p "$dir$(dirname "$lib")"
        cp -L "$lib" "$dir$lib"
done
echo "root:x:0:0:root:/:/bin/sh" > "$dir/etc/passwd"

#!/bin/sh
# shim-glibc.sh SHIM [MAX]: fails unless SHIM (libxmem-shim.so) needs nothing
# but glibc's libc.so.6, libpthread.so.0 and libdl.so.2 and no symbol version
# newer than GLIBC_MAX (default 2.17), so that it loads in any glibc image
# from 2.17 on (docs/shim.md "Any glibc image"). TAP output.
set -eu
shim=$1
max=${2:-2.17}
echo "1..2"

vnum() { echo "$1" | awk -F. '{print $1 * 1000000 + $2 * 1000 + ($3 == "" ? 0 : $3)}'; }

bad_needed=$(readelf -d "$shim" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
        grep -v -x -e libc.so.6 -e libpthread.so.0 -e libdl.so.2 -e ld-linux-x86-64.so.2 || true)
if [ -z "$bad_needed" ]; then
        echo "ok 1 - needs only libc.so.6, libpthread.so.0, libdl.so.2"
else
        echo "not ok 1 - needs $(echo "$bad_needed" | tr '\n' ' ')"
fi

limit=$(vnum "$max")
bad=""
for v in $(readelf -V "$shim" | sed -n 's/.*Name: \(GLIBC_[^ ]*\).*/\1/p' | sort -u); do
        n=${v#GLIBC_}
        case $n in
        [0-9]*) [ "$(vnum "$n")" -le "$limit" ] && continue ;;
        esac
        syms=$(objdump -T "$shim" | awk -v v="($v)" '$0 ~ /\*UND\*/ && index($0, v) {print $NF}' | tr '\n' ' ')
        bad="$bad $v ($syms)"
done
if [ -z "$bad" ]; then
        echo "ok 2 - no symbol version newer than GLIBC_$max"
else
        echo "not ok 2 - newer than GLIBC_$max:$bad"
fi
[ -z "$bad_needed" ] && [ -z "$bad" ]

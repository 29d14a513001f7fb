#!/bin/sh
# glibc-compat.sh map MAX OUT LIB... -- ARCHIVE...: writes OUT, an objcopy
# --redefine-syms file that binds every glibc symbol the ARCHIVEs call (and do
# not define themselves) whose default version in LIB (the build host's
# libc.so.6, libpthread.so.0, libdl.so.2) is newer than GLIBC_MAX to its
# newest version not newer than MAX: "pthread_create pthread_create@GLIBC_2.2.5".
# A symbol whose default version is old enough keeps it (no ancient compat
# implementation is picked); one with no version old enough is left alone and
# the shim's glibc test names it.
# glibc-compat.sh apply MAP IN OUT [OBJCOPY-ARG...]: OUT, a regular archive of
# IN's objects (IN may be a thin archive) with MAP and the arguments applied.
set -eu
mode=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$mode" = apply ]; then
        map=$1 in=$2 out=$3
        shift 3
        case $in in /*) ;; *) in=$PWD/$in ;; esac
        i=0
        if [ "$(head -c 7 "$in")" = '!<thin>' ]; then
                members=$(ar t "$in")
        else
                (cd "$tmp" && ar x "$in")
                members=$(ar t "$in" | sed "s|^|$tmp/|")
        fi
        for m in $members; do
                i=$((i + 1))
                objcopy --redefine-syms="$map" "$@" "$m" "$tmp/$i-$(basename "$m")"
        done
        rm -f "$out"
        ar rcs "$out" "$tmp"/[0-9]*-*
        exit 0
fi
[ "$mode" = map ] || { echo "glibc-compat.sh: unknown mode $mode" >&2; exit 1; }
max=$1
out=$2
shift 2
libs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        [ -e "$1" ] && libs="$libs $1"
        shift
done
[ $# -gt 0 ] && shift
[ -n "$libs" ] || { echo "glibc-compat.sh: no glibc library found" >&2; exit 1; }

nm -g --defined-only "$@" 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u >"$tmp/defined"
nm -u "$@" 2>/dev/null | awk 'NF == 2 {print $2}' | sort -u >"$tmp/undefined"
comm -23 "$tmp/undefined" "$tmp/defined" >"$tmp/calls"
# shellcheck disable=SC2086
readelf -W --dyn-syms $libs | awk '$7 != "UND" && $8 ~ /@GLIBC_[0-9]/ {print $8}' >"$tmp/versions"

awk -v max="$max" '
function vnum(v,    p, n) {
        n = split(v, p, ".")
        return p[1] * 1000000 + (n > 1 ? p[2] : 0) * 1000 + (n > 2 ? p[3] : 0)
}
FNR == NR { wanted[$1] = 1; next }
{
        split($0, parts, "@")
        sym = parts[1]
        if (!(sym in wanted))
                next
        dflt = index($0, "@@") > 0
        ver = dflt ? parts[3] : parts[2]
        n = vnum(substr(ver, 7))
        if (dflt) {
                if (!(sym in dflt_v) || n < dflt_v[sym])
                        dflt_v[sym] = n
        } else if (n <= vnum(max) && (!(sym in best_v) || n > best_v[sym])) {
                best_v[sym] = n
                best[sym] = ver
        }
}
END {
        for (sym in best)
                if (!(sym in dflt_v) || dflt_v[sym] > vnum(max))
                        print sym " " sym "@" best[sym]
}' "$tmp/calls" "$tmp/versions" | sort >"$out"

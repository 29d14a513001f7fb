#!/usr/bin/env bash
# check-man.sh MANDIR SRCDIR BINARY... : each built man page renders with
# no groff warning, and every long option a binary's --help prints is in its
# page (so pages and binaries cannot drift). BINARY is NAME=PATH.
set -euo pipefail
mandir=$1 srcdir=$2; shift 2
fail=0
say() { echo "$*"; }

for page in "$mandir"/*.[578]; do
        warnings=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$page" 2>&1 || echo "groff failed")
        if [[ -n $warnings ]]; then
                say "not ok: $(basename "$page"): $warnings"; fail=1
        elif ! MANWIDTH=80 man -l "$page" 2>/dev/null | grep -q '^NAME'; then
                say "not ok: $(basename "$page"): man -l shows no NAME section"; fail=1
        else
                say "ok: $(basename "$page") renders"
        fi
done

for b in "$@"; do
        name=${b%%=*} exe=${b#*=}
        page=$(ls "$mandir/$name".[578] 2>/dev/null | head -1)
        if [[ -z $page ]]; then
                say "not ok: $name has no man page in $mandir"; fail=1; continue
        fi
        if [[ $name == xmem-runtime ]]; then
                # its --help is the real runtime's: its own options are the
                # ones it removes from the arguments (oci/runtime-args.c)
                opts=$(grep -o '"--[a-z][a-z-]*: missing value"' "$srcdir/oci/runtime-args.c" |
                        grep -o -- '--[a-z][a-z-]*')
        else
                opts=$("$exe" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
        fi
        [[ -n $opts ]] || { say "not ok: $name: no options found"; fail=1; continue; }
        text=$(MANWIDTH=1000 man -l "$page" 2>/dev/null | sed 's/‐/-/g')
        missing=()
        for o in $opts; do
                grep -qE -- "(^|[^a-z-])$o([^a-z0-9-]|$)" <<<"$text" || missing+=("$o")
        done
        if ((${#missing[@]})); then
                say "not ok: $name(${page##*.}) lacks ${missing[*]} of its --help"; fail=1
        else
                say "ok: $name(${page##*.}) has its $(wc -w <<<"$opts") options"
        fi
done
exit $fail

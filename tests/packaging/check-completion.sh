#!/usr/bin/env bash
# check-completion.sh COMPLETION XMEMCTL: the bash completion of xmemctl
# offers the commands and options of `xmemctl --help` for a few prefixes.
set -euo pipefail
completion=$1 xmemctl=$2
source "$completion"
fail=0

# complete WORDS...: COMPREPLY for the last word, as bash would compute it
complete_words() {
        COMP_WORDS=("$@")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        _xmemctl
        ((${#COMPREPLY[@]})) || return 0
        printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
}

expect() {
        local want=$1; shift
        local got
        got=$(complete_words "$@")
        if [[ "$got" != "$want" ]]; then
                echo "not ok: '$*' completes to '$got', want '$want'"
                fail=1
        else
                echo "ok: '$*' -> $got"
        fi
}

expect "list " "$xmemctl" "l"
expect "attach " "$xmemctl" "a"
expect "attach cdi checkpoint convert delete-snapshot detach list move resize restore snapshots stats top " "$xmemctl" ""
expect "--external --local-limit " "$xmemctl" resize web "--"
expect "--json " "$xmemctl" "--j"
expect "--socket " "$xmemctl" "--so"
expect "--local-alloc-limit --local-limit " "$xmemctl" attach web "--loc"
expect "--force " "$xmemctl" detach web "--"
expect "external-first " "$xmemctl" attach web --policy "ex"
# no memd on this socket: no container IDs, and no error
expect "" "$xmemctl" --socket /nonexistent/pk.sock stats ""
exit $fail

#!/usr/bin/env bash
# test-deb.sh SRCDIR MKROOTFS FILL [SANITIZE]: build the Debian packages, install them
# on this machine, run memd from them (systemd when it runs, else directly),
# run a podman container with xmem annotations through the installed
# hooks.d file and the installed shim, paging 256 MiB through a 64 MiB local
# limit, then purge the packages and check nothing is left behind; on a host
# whose PID 1 is not systemd, the same packages' units then run under a
# systemd booted in systemd-nspawn (test-systemd.sh). The machine is
# restored whatever happens (trap). Root only; 77 = skipped.
set -uo pipefail
src=$1 mkrootfs=$2 fill=$3 sanitize=${4:-none}
name=pk-deb-$$
skip() { echo "skip: $*"; exit 77; }
step() { echo "== $*"; }
fail() { echo "not ok: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i)"
# the packages are built from the sources, not from this build: once is enough
[ "$sanitize" = none ] || skip "sanitized build ($sanitize): the plain build's run covers the packages"
for c in dpkg-buildpackage dh scdoc podman runc busybox; do
        command -v "$c" >/dev/null || skip "$c is not installed (scripts/deps.sh)"
done
for p in xmem xmem-appliance; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed" &&
                skip "package $p is installed on this machine: not touching it"
done
for d in /etc/xmem /run/xmem /var/lib/xmem /run/xmem-appliance /var/lib/xmem-appliance; do
        [ -e "$d" ] && skip "$d exists (another xmem install?): not touching it"
done
systemd=false
[ -d /run/systemd/system ] && systemd=true

work=$(mktemp -d /tmp/pk-deb-XXXXXX)
memd_pid=""

# pids of processes running FILE (also once it is deleted)
pids_of() {
        local p exe
        for p in /proc/[0-9]*; do
                exe=$(readlink "$p/exe" 2>/dev/null) || continue
                [ "$exe" = "$1" ] || [ "$exe" = "$1 (deleted)" ] && echo "${p#/proc/}"
        done
}

cleanup() {
        local rc=$?
        set +e
        podman --runtime runc --cgroup-manager cgroupfs --events-backend file rm -f "$name" \
                >/dev/null 2>&1
        if $systemd; then
                systemctl stop memd.service memd.socket xmem-appliance.service >/dev/null 2>&1
        fi
        if [ -n "$memd_pid" ] && kill -0 "$memd_pid" 2>/dev/null; then
                kill -TERM "$memd_pid"
                for _ in $(seq 50); do kill -0 "$memd_pid" 2>/dev/null || break; sleep 0.2; done
                kill -KILL "$memd_pid" 2>/dev/null
        fi
        [ -x /usr/bin/memd ] && /usr/bin/memd --no-config --stop-embedded >/dev/null 2>&1
        for p in $(pids_of /usr/bin/xmem-appliance) $(pids_of /usr/bin/memd); do
                echo "cleanup: killing leftover $p ($(readlink /proc/$p/exe))"
                kill -KILL "$p"
        done
        for p in xmem xmem-appliance; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv "not-installed" &&
                        dpkg --purge "$p" >/dev/null 2>&1
        done
        rm -rf "$work"
        exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step "build (scripts/build-deb)"
"$src/scripts/build-deb" "$work/debs" || fail "scripts/build-deb"
debs=("$work"/debs/xmem_*.deb "$work"/debs/xmem-appliance_*.deb)
[ -f "${debs[0]}" ] && [ -f "${debs[1]}" ] || fail "no xmem and xmem-appliance .deb"

step "install: dpkg -i ${debs[*]##*/}"
dpkg -i "${debs[@]}" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
dpkg -L xmem xmem-appliance | sort -u >"$work/files"
for f in /usr/bin/memd /usr/bin/xmem-appliance /usr/bin/xmemctl /usr/bin/xmem-runtime \
        /usr/libexec/xmem/xmem-hook /usr/share/containers/oci/hooks.d/xmem.json \
        /lib/systemd/system/memd.service /lib/systemd/system/memd.socket \
        /lib/systemd/system/xmem-appliance.service \
        /usr/share/bash-completion/completions/xmemctl; do
        grep -qx "$f" "$work/files" && [ -e "$f" ] || fail "$f is not installed"
done
shim=$(grep '/libxmem-shim.so$' "$work/files") || fail "libxmem-shim.so is not installed"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' xmem xmem-appliance)
for c in /etc/xmem/memd.conf /etc/xmem/appliance.conf; do
        grep -q "$c" <<<"$conffiles" || fail "$c is not a conffile"
done
for m in memd xmem-appliance xmemctl xmem-hook xmem-runtime memd.conf xmem-appliance.conf \
        xmem-annotations libxmem-shim; do
        man -w "$m" >/dev/null 2>&1 || fail "man $m: not installed"
done
hook=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hook"]["path"])' \
        /usr/share/containers/oci/hooks.d/xmem.json)
[ -x "$hook" ] || fail "hooks.d names $hook, not installed"
echo "ok: $(wc -l <"$work/files") paths; conffiles; man pages; hooks.d -> $hook"

step "configuration: a bad key is one line naming the file and line"
printf 'log-level = info\nchunksize = 64K\n' >"$work/bad.conf"
out=$(/usr/bin/memd --config "$work/bad.conf" 2>&1) && fail "memd started with $work/bad.conf"
[ "$out" = "memd: $work/bad.conf:2: unknown key 'chunksize'" ] || fail "bad.conf: '$out'"
echo "ok: $out"
# the installed default file is read (memd logs it, and at debug level)
echo "log-level = debug" >>/etc/xmem/memd.conf

step "memd ($($systemd && echo systemd || echo "started directly: systemd is not running"))"
if $systemd; then
        systemctl start memd.socket memd.service || fail "systemctl start memd"
else
        setsid /usr/bin/memd >"$work/memd.log" 2>&1 </dev/null &
        memd_pid=$!
fi
for _ in $(seq 100); do
        /usr/bin/xmemctl list >/dev/null 2>&1 && break
        sleep 0.2
done
/usr/bin/xmemctl list >/dev/null || { cat "$work/memd.log" 2>/dev/null; fail "memd does not answer"; }
if ! $systemd; then
        grep -q "configuration: /etc/xmem/memd.conf" "$work/memd.log" ||
                fail "memd did not read /etc/xmem/memd.conf: $(cat "$work/memd.log")"
fi
echo "ok: memd answers on /run/xmem/memd.sock"

step "podman container through the installed hooks.d: 256 MiB through 64 MiB local"
XMEM_SHIM=$shim sh "$mkrootfs" "$work/rootfs" "$fill" || fail "mkrootfs"
report='if [ -d /sys/fs/cgroup/memory ]; then M=/sys/fs/cgroup/memory;
 echo limit $(cat $M/memory.limit_in_bytes) max $(cat $M/memory.max_usage_in_bytes) $(grep "^oom_kill " $M/memory.oom_control);
 else M=/sys/fs/cgroup; echo limit $(cat $M/memory.max) max $(cat $M/memory.peak 2>/dev/null || echo 0) $(grep "^oom_kill " $M/memory.events); fi'
out=$(timeout 300 podman --runtime runc --cgroup-manager cgroupfs --events-backend file run \
        --rm --name "$name" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network none \
        --hooks-dir /usr/share/containers/oci/hooks.d \
        --annotation io.xmem.enable=true --annotation io.xmem.local-limit=64M \
        --annotation io.xmem.external=1G --rootfs "$work/rootfs" \
        /bin/sh -c "/bin/container_fill 256 && $report" 2>&1) ||
        { cat "$work/memd.log" 2>/dev/null; fail "podman run: $out"; }
echo "$out" | tail -3
grep -q "fill-ok 256 MiB" <<<"$out" || fail "no fill-ok 256 MiB"
read -r limit max oom < <(sed -n 's/.*limit \([0-9]*\) max \([0-9]*\) oom_kill \([0-9]*\).*/\1 \2 \3/p' <<<"$out")
[ "${limit:-0}" = $((64 << 20)) ] || fail "the container's limit is ${limit:-none}, not 64M"
[ "${max:-0}" -lt $((64 << 20)) ] || fail "peak ${max} reached the 64M limit"
[ "${oom:-1}" = 0 ] || fail "oom_kill ${oom}"
[ -z "$(/usr/bin/xmemctl list | sed 1d)" ] || fail "memd still lists a container"
if ! $systemd; then
        grep -q "^memd.* debug: container" "$work/memd.log" ||
                fail "no debug line: memd.conf's log-level = debug was not applied"
fi
echo "ok: 4x its local limit paged, peak $((max >> 20)) MiB, no OOM kill, detached"

step "stop memd and purge"
if $systemd; then
        systemctl stop memd.service memd.socket || fail "systemctl stop memd"
else
        kill -TERM "$memd_pid"
        wait "$memd_pid"
        memd_pid=""
fi
dpkg --purge xmem xmem-appliance >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge"; }
left=()
while read -r f; do
        [ -d "$f" ] && continue # shared directories (/usr/bin) stay
        [ -e "$f" ] || [ -L "$f" ] && left+=("$f")
done <"$work/files"
for d in /etc/xmem /usr/libexec/xmem /usr/share/doc/xmem /usr/share/doc/xmem-appliance \
        /run/xmem /var/lib/xmem /run/xmem-appliance /var/lib/xmem-appliance; do
        [ -e "$d" ] && left+=("$d")
done
for f in $(find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
        /var/lib/systemd/deb-systemd-helper-masked \( -name 'memd*' -o -name 'xmem*' \) 2>/dev/null); do
        left+=("$f")
done
[ ${#left[@]} -eq 0 ] || fail "left behind after purge: ${left[*]}"
procs="$(pids_of /usr/bin/memd) $(pids_of /usr/bin/xmem-appliance)"
[ -z "${procs// /}" ] || fail "processes left: $procs"
for p in xmem xmem-appliance; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed" && fail "$p still installed"
done
echo "ok: purged; no file, directory, unit link or process left"

step "the units under a live systemd"
if $systemd; then
        echo "ok: memd ran under this host's systemd above"
else
        bash "$src/tests/packaging/test-systemd.sh" "$work/debs" \
                "$src/tests/integration/debian-image.sh"
        rc=$?
        [ $rc = 0 ] || [ $rc = 77 ] || fail "test-systemd.sh (the units in systemd-nspawn)"
fi

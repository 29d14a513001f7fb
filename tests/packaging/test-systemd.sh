#!/usr/bin/env bash
# test-systemd.sh DEBS_DIR IMAGE_SCRIPT: xmem's units under a live systemd.
# Boots a Debian image with systemd as init in systemd-nspawn (this host's
# PID 1 need not be systemd), installs the xmem and xmem-appliance packages
# from DEBS_DIR in it, and checks what `systemd-analyze verify` cannot:
# memd.socket activates memd.service, which reaches READY (Type=notify)
# under all its hardening and pings the watchdog; a SIGKILLed memd is
# restarted (Restart=on-failure) and finds its embedded appliance, which
# outlives `systemctl stop memd` (KillMode=process) until `memd
# --stop-embedded`; xmem-appliance.service starts. The image stays pristine
# (an overlay), and the container, its mounts and nspawn's files in /run go
# at the end. Root only; 77 = skipped.
set -uo pipefail
debs=$1 image_script=$2
machine=xmemsd-$$
skip() { echo "skip: $*"; exit 77; }
step() { echo "== $*"; }
fail() { echo "not ok: $*"; [ -f "$work/boot.log" ] && tail -20 "$work/boot.log"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is not installed (scripts/deps.sh)"
image=$(sh "$image_script" bookworm systemd)
case $? in 0) ;; 77) skip "no bookworm image: $image" ;; *) echo "not ok: the image: $image"; exit 1 ;; esac

work=$(mktemp -d /tmp/xmem-sd-XXXXXX)
root=$work/root nspawn_pid="" leader=""
had_nspawn_dir=false had_units_load=false
[ -e /run/systemd/nspawn ] && had_nspawn_dir=true
[ -e /run/systemd/systemd-units-load ] && had_units_load=true

cleanup() {
        local rc=$?
        set +e
        if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
                kill -TERM "$nspawn_pid" # the container's systemd powers off
                for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
                kill -KILL "$nspawn_pid" 2>/dev/null
                wait "$nspawn_pid" 2>/dev/null
        fi
        mountpoint -q "$root" && umount -R "$root"
        $had_nspawn_dir || rm -rf /run/systemd/nspawn
        $had_units_load || rm -f /run/systemd/systemd-units-load
        rm -rf "$work"
        exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# in the container: every namespace of its init
inside() { nsenter -t "$leader" -a "$@"; }
# is /usr/bin/NAME running in the container? (the image has no procps)
running() {
        inside sh -c 'for p in /proc/[0-9]*; do [ "$(readlink "$p/exe")" = "$1" ] && exit 0; done
                exit 1' sh "/usr/bin/$1"
}

step "boot $image (overlay) in systemd-nspawn with the packages installed"
mkdir -p "$root" "$work/upper" "$work/ovl"
mount -t overlay overlay -o "lowerdir=$image,upperdir=$work/upper,workdir=$work/ovl" "$root" ||
        fail "overlay mount"
mkdir -p "$root/tmp/debs"
cp "$debs"/xmem_*.deb "$debs"/xmem-appliance_*.deb "$root/tmp/debs/" || fail "no packages in $debs"
chroot "$root" sh -c 'dpkg -i /tmp/debs/xmem-appliance_*.deb /tmp/debs/xmem_*.deb' \
        >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i in the image"; }
# no D-Bus or machined on this host: no scope, no registration
systemd-nspawn -D "$root" -M "$machine" --register=no --keep-unit --console=pipe \
        --bind=/dev/userfaultfd -b >"$work/boot.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 100); do
        leader=$(pgrep -P "$nspawn_pid" -x systemd)
        [ -n "$leader" ] && inside systemctl is-system-running --wait >/dev/null 2>&1 && break
        sleep 0.3
done
[ -n "$leader" ] || fail "systemd did not start in the container"
state=$(inside systemctl is-system-running)
[ "$state" = running ] || fail "the container's systemd is $state: $(inside systemctl --failed --no-legend)"
echo "ok: systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) running as the container's init (pid $leader here)"

step "socket activation, READY under the hardening, the watchdog"
[ "$(inside systemctl is-active memd.socket)" = active ] || fail "memd.socket is not listening"
inside xmemctl list >/dev/null || fail "xmemctl list through memd.socket"
for _ in $(seq 50); do [ "$(inside systemctl is-active memd.service)" = active ] && break; sleep 0.2; done
show() { inside systemctl show memd.service -p "$1" --value; }
[ "$(show ActiveState)" = active ] || fail "memd.service is $(show ActiveState): $(inside journalctl -u memd --no-pager | tail -5)"
[ "$(show StatusText)" = serving ] || fail "memd's status is '$(show StatusText)'"
[ "$(show WatchdogUSec)" = 30s ] || fail "WatchdogUSec=$(show WatchdogUSec)"
w0=$(show WatchdogTimestampMonotonic)
[ "${w0:-0}" -gt 0 ] || fail "no watchdog ping from memd"
inside journalctl -u memd --no-pager | grep -q "privileges: only CAP_DAC_OVERRIDE and CAP_KILL" ||
        fail "memd did not drop its privileges: $(inside journalctl -u memd --no-pager | tail -5)"
echo "ok: memd.service active through memd.socket, status serving, watchdog pinged"

step "SIGKILL: restarted, the embedded appliance found again"
pid0=$(show MainPID)
inside systemctl kill -s SIGKILL --kill-whom=main memd.service
for _ in $(seq 50); do
        [ "$(show NRestarts)" = 1 ] && [ "$(show ActiveState)" = active ] && break
        sleep 0.2
done
[ "$(show NRestarts)" = 1 ] && [ "$(show MainPID)" != "$pid0" ] ||
        fail "memd was not restarted (NRestarts $(show NRestarts), $(show ActiveState))"
inside xmemctl list >/dev/null || fail "the restarted memd does not answer"
inside journalctl -u memd --no-pager | grep -q "embedded appliance: found running" ||
        fail "the restarted memd did not find its embedded appliance"
echo "ok: restarted (NRestarts 1), embedded appliance found running"

step "stop: the embedded appliance outlives memd until memd --stop-embedded"
inside systemctl stop memd.service memd.socket || fail "systemctl stop memd"
running xmem-appliance || fail "the embedded appliance went with memd"
inside memd --no-config --stop-embedded || fail "memd --stop-embedded"
for _ in $(seq 25); do running xmem-appliance || break; sleep 0.2; done
running xmem-appliance && fail "the embedded appliance still runs"
echo "ok: memd stopped, its appliance kept, then stopped"

step "xmem-appliance.service"
inside systemctl start xmem-appliance.service || fail "systemctl start xmem-appliance"
[ "$(inside systemctl is-active xmem-appliance.service)" = active ] ||
        fail "xmem-appliance.service: $(inside journalctl -u xmem-appliance --no-pager | tail -5)"
inside systemctl stop xmem-appliance.service || fail "systemctl stop xmem-appliance"
echo "ok: xmem-appliance.service started (Type=notify) and stopped"

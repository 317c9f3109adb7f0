#!/bin/bash
# Build a tiny initramfs for Warren microVM guests (Debian bookworm host).
# Usage: build-vm-initramfs.sh OUTDIR
#   OUTDIR/vmlinuz         - Debian cloud kernel (copied from linux-image-*-cloud-amd64)
#   OUTDIR/initramfs.cpio.gz
# Needs: apt (downloads linux-image-cloud-amd64 + busybox-static .debs, no install),
#        kmod (depmod/modprobe, only to resolve module deps), cpio, gzip.
# Guest kernel cmdline understood by /init:
#   warren.root=virtiofs:TAG  (default virtiofs:root)  or  warren.root=blk:/dev/vda[:fstype]
#   warren.rootflags=...      extra mount options for the root fs
#   warren.init=/path         program to exec as PID 1 after switch_root (default /sbin/init)
#   warren.arg=...            one argument passed to warren.init (optional, repeatable not supported)
#   warren.debug=1            print progress to the console
#   warren.ip=ADDR/PREFIX     configure eth0 (and lo) before switch_root; warren.gw=GW adds the
#                             default route (kernel network state survives switch_root)
# If the initramfs holds /warren-agent (the host appends it as a second, uncompressed cpio
# archive: warren-runtime's vm_initrd), /init copies it to a tmpfs at /newroot/run and execs it
# as PID 1 with `--vport /dev/virtio-ports/warren`; warren.init is then ignored.
set -euo pipefail
OUT=${1:?usage: $0 OUTDIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d /tmp/vm-initramfs.XXXXXX); trap 'rm -rf "$W"' EXIT
command -v /sbin/depmod >/dev/null || apt-get install -y -qq --no-install-recommends kmod >/dev/null
command -v cpio >/dev/null || apt-get install -y -qq --no-install-recommends cpio >/dev/null
cd "$W"
# -- 1. kernel + busybox from Debian packages, extracted (not installed) --
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
apt-get download "$KPKG" busybox-static >/dev/null 2>&1
dpkg -x linux-image-*.deb k
dpkg -x busybox-static_*.deb bb
KV=$(ls k/lib/modules)
/sbin/depmod -b "$W/k" "$KV"
cp "k/boot/vmlinuz-$KV" "$OUT/vmlinuz"
cp "k/boot/config-$KV" "$OUT/config-$KV"
# -- 2. initramfs tree --
R=$W/root
mkdir -p $R/{bin,dev,proc,sys,newroot,lib/modules}
cp bb/bin/busybox $R/bin/busybox
for a in sh mount umount switch_root insmod mkdir ln cat ls sleep echo mknod basename ip cp chmod; do ln -s busybox $R/bin/$a; done
# modules, in dependency order (all virtio bits are =m in Debian's cloud kernel)
: > $R/lib/modules/load-order
# AF_ALG (af_alg, algif_hash, algif_skcipher): the guest kernel's crypto API, which the jail
# tier's seccomp filter refuses; in a guest a bug in it reaches only the guest's own kernel.
for m in virtio_mmio virtio_pci virtiofs virtio_console virtio_blk virtio_net virtio-rng af_alg algif_hash algif_skcipher; do
  /sbin/modprobe -d "$W/k" -S "$KV" --show-depends $m | awk '{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" $R/lib/modules/; echo "$(basename "$ko")" >> $R/lib/modules/load-order
done
cat > $R/init <<'INIT'
#!/bin/sh
# Warren microVM initramfs /init (busybox)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ROOT=virtiofs:root; RINIT=/sbin/init; RFLAGS=; ARG=; DBG=; IPADDR=; GW=
for x in $(cat /proc/cmdline); do
  case "$x" in
    warren.root=*) ROOT=${x#warren.root=};;
    warren.init=*) RINIT=${x#warren.init=};;
    warren.rootflags=*) RFLAGS=${x#warren.rootflags=};;
    warren.arg=*) ARG=${x#warren.arg=};;
    warren.debug=1) DBG=1;;
    warren.ip=*) IPADDR=${x#warren.ip=};;
    warren.gw=*) GW=${x#warren.gw=};;
  esac
done
log() { [ -n "$DBG" ] && echo "initramfs: $*"; }
for ko in $(cat /lib/modules/load-order); do insmod /lib/modules/$ko 2>/dev/null || log "insmod $ko failed"; done
# devtmpfs gives /dev/vportNpM only; recreate udev's /dev/virtio-ports/NAME links
mkdir -p /dev/virtio-ports
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ -e /sys/class/virtio-ports ] && [ -n "$(ls /sys/class/virtio-ports 2>/dev/null)" ] && break
  sleep 0.05
done
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  ln -sf ../$(basename $p) /dev/virtio-ports/$(cat $p/name)
done
# The Debian images have no `ip`, and the agent configures no network: do it here, once.
if [ -n "$IPADDR" ]; then
  # virtio_net registers eth0 asynchronously after its insmod returns.
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do [ -e /sys/class/net/eth0 ] && break; sleep 0.05; done
  ip link set lo up
  ip link set eth0 up || log "no eth0"
  ip addr add "$IPADDR" dev eth0 || log "ip addr add $IPADDR failed"
  [ -n "$GW" ] && { ip route add default via "$GW" || log "ip route add default via $GW failed"; }
fi
case "$ROOT" in
  virtiofs:*) mount -t virtiofs ${RFLAGS:+-o $RFLAGS} "${ROOT#virtiofs:}" /newroot ;;
  blk:*) d=${ROOT#blk:}; fs=${d#*:}; [ "$fs" = "$d" ] && fs=ext4; d=${d%%:*}
         mount -t $fs ${RFLAGS:+-o $RFLAGS} $d /newroot ;;
esac || { echo "initramfs: cannot mount root $ROOT"; ls /sys/bus/virtio/devices; exec sh; }
mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/run
# A fresh /run, as systemd would give: the agent is copied there so that it runs from memory
# and the rootfs needs no copy of it.
mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || log "cannot mount /newroot/run"
if [ -e /warren-agent ]; then
  cp /warren-agent /newroot/run/warren-agent && chmod 0755 /newroot/run/warren-agent
  RINIT=/run/warren-agent
  set -- --vport /dev/virtio-ports/warren
elif [ -n "$ARG" ]; then
  set -- "$ARG"
else
  set --
fi
log "root mounted ($ROOT), exec $RINIT $*"
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot "$RINIT" "$@"
INIT
chmod +x $R/init
(cd $R && find . | cpio -o -H newc --quiet | gzip -9) > "$OUT/initramfs.cpio.gz"
echo "kernel: $OUT/vmlinuz ($KV)"; echo "initramfs: $OUT/initramfs.cpio.gz ($(stat -c %s "$OUT/initramfs.cpio.gz") bytes)"
cat $R/lib/modules/load-order | tr '\n' ' '; echo

#!/usr/bin/env bash
# Prepares the microVM tier for a data dir: QEMU from Debian, the Rust virtiofsd (built with
# cargo, cached in target/vm-tools), a Debian cloud kernel with a small initramfs, and the
# read-only VMM root `DATA_DIR/vm/root` that every vm-tier sandbox's jail runs QEMU and
# virtiofsd in (their binaries, the libraries they load, QEMU's firmware, the kernel).
# Usage: scripts/vm/setup.sh DATA_DIR. Needs root. Idempotent; rebuilds the root every run
# (about 5 s once the tools are there). `warren serve` offers `tier: vm` only when the root is
# complete.
set -euo pipefail
data=${1:?usage: $0 DATA_DIR}
cd "$(dirname "$0")/../.."
repo=$PWD
if [ "$(id -u)" != 0 ]; then
  echo "scripts/vm/setup.sh needs root" >&2
  exit 1
fi

# -- 1. host packages: QEMU, and what virtiofsd builds and runs against --
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
for p in libseccomp-dev libcap-ng-dev kmod cpio; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

# The guest kernel and busybox are downloaded (not installed) from the same package lists.
apt-cache show linux-image-cloud-amd64 busybox-static >/dev/null 2>&1 || apt-get update -qq

# -- 2. virtiofsd (Debian bookworm ships only QEMU's legacy C one, root-only) --
tools=$repo/target/vm-tools
virtiofsd=$tools/bin/virtiofsd
if [ ! -x "$virtiofsd" ]; then
  echo "building virtiofsd 1.14.0 (cargo install, about 2 minutes)"
  cargo install --quiet --locked virtiofsd --version 1.14.0 --root "$tools"
fi

# -- 3. guest kernel and initramfs --
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/vm/build-initramfs.sh "$work/boot" >/dev/null

# -- 4. the VMM root: files at their host paths, plus every library they load --
root=$data/vm/root
new=$data/vm/root.new
rm -rf "$new"
mkdir -p "$new"
copy() { # copy PATH into the root at the same path, following symlinks
  local src=$1
  mkdir -p "$new$(dirname "$src")"
  cp -L "$src" "$new$src"
}
qemu=$(command -v qemu-system-x86_64)
copy "$qemu"
mkdir -p "$new/usr/libexec"
cp "$virtiofsd" "$new/usr/libexec/virtiofsd"
# QEMU loads its TCG accelerator as a module (no other module is wanted: no display, no audio).
modules=(/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-*.so)
for m in "${modules[@]}"; do copy "$m"; done
for bin in "$qemu" "$virtiofsd" "${modules[@]}"; do
  ldd "$bin" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}'
done | sort -u | while read -r lib; do copy "$lib"; done
# QEMU looks its firmware up under /usr/share/qemu (the microvm machine loads bios-microvm.bin).
mkdir -p "$new/usr/share"
cp -rL /usr/share/qemu "$new/usr/share/qemu"
# Debian's merged /usr: the loader is asked for as /lib64/ld-linux-x86-64.so.2.
[ -e "$new/lib64" ] || { mkdir -p "$new/usr/lib64" && ln -s usr/lib64 "$new/lib64"; }
[ -e "$new/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$new/lib64/"
mkdir -p "$new/boot"
cp "$work/boot/vmlinuz" "$new/boot/vmlinuz"
cp "$work/boot/initramfs.cpio.gz" "$new/boot/initramfs.base.gz"
# Mount points the jail fills (the root is attached read-only), and the tenant's root.
mkdir -p "$new"/{proc,dev,sys,tmp,run,etc,vm/root}
: > "$new/etc/passwd"
chmod -R go-w "$new"
rm -rf "$root.old"
[ -e "$root" ] && mv "$root" "$root.old"
mv "$new" "$root"
rm -rf "$root.old"
echo "vm tier: $root ($(du -sh "$root" | cut -f1)), kernel $(file -b "$root/boot/vmlinuz" | grep -o 'version [^ ]*' || true)"

#!/usr/bin/env bash
# Host packages Warren needs to build and run: installs the missing ones on Debian and Ubuntu
# (one line says which), and on other systems names them and fails. Needs root to install.
# Used by scripts/up.sh and .ci/run.
set -euo pipefail

# package → how to tell it is there without a package manager (a command, or a file).
packages=(btrfs-progs mmdebstrap python3-pip ca-certificates util-linux procps gcc libc6-dev pkg-config nftables iproute2 lxcfs chromium curl docker-registry)
present() {
  case "$1" in
    btrfs-progs) command -v mkfs.btrfs && command -v btrfs ;;
    mmdebstrap) command -v mmdebstrap ;;
    # The default image's uv comes from its PyPI wheel, fetched with the host's pip.
    python3-pip) python3 -m pip --version ;;
    ca-certificates) test -s /etc/ssl/certs/ca-certificates.crt ;;
    util-linux) command -v findmnt && command -v setpriv ;;
    procps) command -v pgrep ;;
    gcc) command -v cc ;;
    # The static agent and jailer link against libc.a.
    libc6-dev) compgen -G "/usr/lib/*/libc.a" || test -e /usr/lib/libc.a ;;
    pkg-config) command -v pkg-config ;;
    # The sandbox firewall is installed through nft's JSON API.
    nftables) command -v nft ;;
    # The network tests look at links and addresses from inside a namespace.
    iproute2) command -v ip ;;
    # Shows each sandbox its own memory and CPUs in /proc (`warren serve` runs it; it pulls in
    # libfuse3).
    lxcfs) command -v lxcfs ;;
    # The service URL conformance test opens browser_url in headless Chromium and fetches
    # download links with plain curl.
    chromium) command -v chromium ;;
    curl) command -v curl ;;
    # warren-oci's registry test pulls from a local registry (the CNCF distribution one).
    docker-registry) command -v docker-registry ;;
    *) return 1 ;;
  esac
}

missing=()
for p in "${packages[@]}"; do
  present "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "Warren needs these packages (Debian names): ${missing[*]}; install them with your package manager and run this again" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

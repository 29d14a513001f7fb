# scripts/deps.sh: sourced by scripts/test and scripts/demo. Installs every
# build and test dependency with apt-get, quietly, only when one is missing.
XMEM_PACKAGES=(
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  libjson-c-dev libsystemd-dev libcap-dev libseccomp-dev libjemalloc-dev
  libcriterion-dev libibverbs-dev librdmacm-dev libssl-dev
  runc crun busybox-static podman iproute2 util-linux e2fsprogs python3 debootstrap curl criu
  redis-server redis-tools python3-matplotlib
  prometheus containerd nodejs npm scdoc debhelper dpkg-dev man-db groff-base systemd-container
)

xmem_install_deps() {
  local missing=()
  for p in "${XMEM_PACKAGES[@]}"; do
    # node and npm from another source (NodeSource's nodejs bundles npm and
    # conflicts with Debian's npm package) serve as well
    case "$p" in nodejs) command -v node >/dev/null && continue ;;
                 npm) command -v npm >/dev/null && continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "xmem: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "xmem: missing packages and not root: apt-get install ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Kubernetes manifests' validator (tests/kubernetes: kubernetes-models and
# yaml from the npm registry, versions pinned in its package-lock.json).
xmem_install_node_deps() {
  local dir
  dir="$(dirname "${BASH_SOURCE[0]}")/../tests/kubernetes"
  [ -d "$dir/node_modules/kubernetes-models" ] && return 0
  echo "xmem: npm ci in tests/kubernetes"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

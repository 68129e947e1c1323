#!/usr/bin/env bash
# A real kube-apiserver (and kubectl, and etcd) for the control-plane tests
# (testkit/src/apiserver.rs), built offline from Debian 12's `kubernetes` source
# package and cached in /var/cache/podswitch/kubernetes-1.20.2/.
#
# Why: no package registry ships kube-apiserver, but Debian's source package
# (1.20.5+really1.20.2) vendors every Go dependency, so it builds with
# Debian's golang-go and no network beyond the Debian mirror. etcd comes from
# the etcd-server package (/usr/bin/etcd); kubectl is the one Debian builds
# from the same source (kubernetes-client), unpacked from its .deb into the
# cache rather than installed, so it never clashes with another kubectl on
# the machine (a cloud SDK's /usr/bin/kubectl, say).
#
# How: adds a deb-src twin of the machine's Debian sources, `apt-get source
# kubernetes` in a scratch directory under /var/tmp (never in the checkout),
# swaps the vendored modern-go/reflect2 1.0.1 (it crashes under Go 1.19) and
# json-iterator for Debian's packaged sources, then `make generated_files`
# and `make WHAT=cmd/kube-apiserver` with GOFLAGS=-mod=vendor GOPROXY=off.
# The scratch directory (about 2 GB with the Go build cache) is removed at
# the end, whether the build worked or not.
#
# How long: about 8 minutes on 2 cores the first time (a minute of apt, 7 of
# Go); afterwards nothing is done as long as the cached binaries answer
# `--version`. The cache holds 150 MB.
#
# Idempotent; runs as root, without standard input (CI=true is fine).
set -euo pipefail

version=1.20.2
cache=/var/cache/podswitch/kubernetes-$version
scratch=/var/tmp/podswitch-kubernetes-build

# Prints the cached binaries' versions; fails if one is missing or broken.
cached_ok() {
  "$cache/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes v$version" &&
    "$cache/kubectl" version --client --short 2>/dev/null | grep -q "v$version" &&
    /usr/bin/etcd --version >/dev/null 2>&1
}

report() {
  echo "kube-apiserver: $cache/kube-apiserver ($("$cache/kube-apiserver" --version))"
  echo "kubectl:        $cache/kubectl ($("$cache/kubectl" version --client --short 2>/dev/null))"
  echo "etcd:           /usr/bin/etcd ($(/usr/bin/etcd --version | head -n1))"
}

if cached_ok; then
  report
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "kube-apiserver.sh: need root to install packages and write $cache" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# One build at a time (two checkouts may run their tests at once); the one
# that waited finds the binaries cached.
exec 9>/var/lock/podswitch-kube-apiserver.lock
flock 9
if cached_ok; then
  report
  exit 0
fi

# etcd-server: the tests' etcd. rsync: the code generators. jq: Debian's
# build dependency. The two -dev packages: sources that replace the vendored
# reflect2/json-iterator. openssl: the harness makes its service-account key.
# dpkg-dev: unpacks the source package.
packages=(golang-go etcd-server rsync jq make dpkg-dev xz-utils openssl
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# A deb-src twin of every Debian source of the machine, so that `apt-get
# source` finds the package; written once, and only if the machine has no
# deb-src entry of its own.
src_list=/etc/apt/sources.list.d/podswitch-deb-src
need_update=0
if [ ! -e "$src_list.sources" ] && [ ! -e "$src_list.list" ] &&
  ! cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -qE '^deb-src\s|^Types:.*\bdeb-src\b'; then
  # One-line style (/etc/apt/sources.list, *.list): deb lines of Debian mirrors.
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -E '^deb\s.*/debian(-security)?/?\s' | sed 's/^deb\s/deb-src /' >"$src_list.list" || true
  [ -s "$src_list.list" ] || rm -f "$src_list.list"
  # deb822 style (*.sources): stanzas of type deb (and not already deb-src).
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
      /Types:([^\n]* )?deb( |\n|$)/ && !/deb-src/ && /URIs:[^\n]*\/debian(-security)?\/?( |\n|$)/ {
        sub(/Types:[^\n]*/, "Types: deb-src"); print
      }' /etc/apt/sources.list.d/*.sources >"$src_list.sources"
    [ -s "$src_list.sources" ] || rm -f "$src_list.sources"
  fi
  need_update=1
fi
if [ "$need_update" -eq 1 ] || [ ${#missing[@]} -gt 0 ] || ! apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: 1.20"; then
  apt-get update -qq
fi

if [ ${#missing[@]} -gt 0 ]; then
  # etcd-server's package starts an etcd service on 2379 where an init system
  # runs; the tests start their own etcd, so keep it from starting (policy-rc.d
  # answers "not allowed" to invoke-rc.d and deb-systemd-invoke) and disable it.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null ||
    { [ "$own_policy" -eq 0 ] || rm -f "$policy"; exit 1; }
  [ "$own_policy" -eq 0 ] || rm -f "$policy"
fi
if [ -d /run/systemd/system ]; then
  if systemctl is-enabled --quiet etcd 2>/dev/null || systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd
  fi
elif pgrep -u etcd -x etcd >/dev/null 2>&1; then
  /etc/init.d/etcd stop || true
fi

if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: 1.20"; then
  echo "kube-apiserver.sh: apt has no source package kubernetes 1.20 (is this Debian 12 with a deb-src entry?)" >&2
  exit 1
fi

rm -rf "$scratch"
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
start=$(date +%s)

# kubectl: Debian's own build of the same source, unpacked (not installed).
apt-get -qq -o APT::Sandbox::User=root download kubernetes-client
dpkg-deb -x kubernetes-client_*.deb client

apt-get -qq -o APT::Sandbox::User=root source kubernetes
src=$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
cd "$src"

# reflect2 1.0.1 reads Go runtime internals that Go 1.19 changed (a crash at
# start); Debian's reflect2 1.0.2 and the json-iterator that goes with it work.
gocode=/usr/share/gocode/src/github.com
for dir in modern-go/reflect2 json-iterator/go; do
  rm -rf "vendor/github.com/$dir"
  cp -rL "$gocode/$dir" "vendor/github.com/$dir"
done

# The version the binaries report (hack/lib/version.sh reads this file
# instead of asking git).
cat >"$scratch/version" <<EOF
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$version'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF

export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GO111MODULE=on
export GOCACHE="$scratch/gocache" GOPATH="$scratch/gopath"
export KUBE_GIT_VERSION_FILE="$scratch/version"
make generated_files
make WHAT=cmd/kube-apiserver

mkdir -p "$cache"
install -m 755 _output/bin/kube-apiserver "$cache/kube-apiserver"
install -m 755 "$scratch/client/usr/bin/kubectl" "$cache/kubectl"
echo "kube-apiserver.sh: built in $(($(date +%s) - start)) s"
cached_ok || { echo "kube-apiserver.sh: the built binaries do not run" >&2; exit 1; }
report

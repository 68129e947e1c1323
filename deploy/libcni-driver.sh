#!/usr/bin/env bash
# Builds the libcni driver (testkit/libcni/main.go): a small Go program that
# drives a CNI plugin the way a container runtime built on libcni 1.1 does
# (containerd 1.6/1.7, CRI-O before libcni 1.2). It is built offline from
# Debian 12 packages:
#   - golang-go                   (Go 1.19)
#   - golang-github-appc-cni-dev  (libcni 1.1.2 sources in /usr/share/gocode)
# Both are installed with apt-get when missing (apt-get update only then).
#
# Output: $LIBCNI_DRIVER_DIR/libcni-driver
#         (default /var/cache/podswitch/libcni-driver/libcni-driver), with
#         main.go.sha256 beside it: the checksum of the main.go it was built
#         from plus the Go and libcni package versions. The build is skipped
#         when the binary exists and that stamp still matches. Nothing is
#         written into the checkout; the Go build cache lives in a scratch
#         dir under /var/tmp that is removed afterwards.
# The binary's path is printed on the last line of stdout.
# Usage: deploy/libcni-driver.sh        (root; idempotent; no stdin needed)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
src="$root/testkit/libcni/main.go"
out_dir="${LIBCNI_DRIVER_DIR:-/var/cache/podswitch/libcni-driver}"
bin="$out_dir/libcni-driver"
stamp="$out_dir/main.go.sha256"
log() { echo "libcni-driver.sh: $*" >&2; }

[ -f "$src" ] || { log "$src not found"; exit 1; }

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}
missing=()
for pkg in golang-go golang-github-appc-cni-dev; do
  installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >&2
fi
go=/usr/bin/go
libcni_src=/usr/share/gocode/src/github.com/containernetworking/cni/libcni
[ -x "$go" ] || { log "$go not found after installing golang-go"; exit 1; }
[ -d "$libcni_src" ] || { log "$libcni_src not found"; exit 1; }

mkdir -p "$out_dir"
# One build at a time (two CI jobs, or a test and a developer, on one box).
exec 9>"$out_dir/.lock"
flock 9

want="$(sha256sum "$src" | cut -d' ' -f1)  main.go
# go=$(dpkg-query -W -f='${Version}' golang-go) libcni=$(dpkg-query -W -f='${Version}' golang-github-appc-cni-dev)"
if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "up to date, build skipped"
  echo "$bin"
  exit 0
fi

scratch="$(mktemp -d /var/tmp/podswitch-libcni-driver.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
pkg_dir="$scratch/gopath/src/podswitch/libcni-driver"
mkdir -p "$pkg_dir" "$scratch/cache" "$scratch/tmp"
cp "$src" "$pkg_dir/main.go"

log "building $bin from $src"
start=$SECONDS
# GOPATH mode: the scratch GOPATH holds the driver, Debian's /usr/share/gocode
# holds libcni and its dependencies. Nothing is fetched (GOPROXY=off).
(
  cd "$pkg_dir"
  env -u GOROOT -u GOBIN -u GOARCH -u GOTOOLCHAIN -u GOEXPERIMENT \
    GO111MODULE=off GOPATH="$scratch/gopath:/usr/share/gocode" \
    GOFLAGS= GOPROXY=off GOSUMDB=off GONOSUMDB= GOPRIVATE= \
    GOENV=off GOCACHE="$scratch/cache" GOTMPDIR="$scratch/tmp" \
    CGO_ENABLED=0 GOOS=linux \
    "$go" build -trimpath -o "$scratch/libcni-driver" .
)
install -m 0755 "$scratch/libcni-driver" "$bin.new"
mv -f "$bin.new" "$bin"
printf '%s\n' "$want" >"$stamp.new"
mv -f "$stamp.new" "$stamp"
log "built in $((SECONDS - start))s"
echo "$bin"

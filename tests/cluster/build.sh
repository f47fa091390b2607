#!/usr/bin/env bash
# Builds the test cluster's binaries from Go modules into a cache outside the
# repo, one directory per component and version, so only a cold machine pays:
#   $CAIRN_K8S_CACHE/kubernetes-<v>/bin/{kube-apiserver,...,kubectl,kube-proxy}
#   $CAIRN_K8S_CACHE/etcd-<v>/bin/etcd
#   $CAIRN_K8S_CACHE/kwok-<v>/bin/kwok
#   $CAIRN_K8S_CACHE/crictl-<v>/bin/crictl
#   $CAIRN_K8S_CACHE/pause/bin/pause       (tiny static sandbox binary)
# A component counts as built when its ".done" stamp exists, so an interrupted
# build is redone rather than trusted.
#
# The machine has 2 cores shared with other work: everything runs under
# `nice`, and go builds one package at a time (-p 1) unless CI=true or
# CAIRN_K8S_BUILD_JOBS says otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v go >/dev/null || { log "go is not installed"; exit 2; }

CACHE="${CAIRN_K8S_CACHE:-/var/cache/cairn-k8s}"
if [[ -n "${CAIRN_K8S_BUILD_JOBS:-}" ]]; then
  JOBS="$CAIRN_K8S_BUILD_JOBS"
elif [[ "${CI:-}" == "true" ]]; then
  JOBS="$(nproc)"
else
  JOBS=1
fi

# Module and build caches live beside the binaries, not in the repo or the user's
# GOPATH; the build cache is dropped at the end (see below).
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=mod -trimpath -p=$JOBS"
# Only the module proxy: never fall back to fetching from version-control hosts.
GOPROXY="$(go env GOPROXY 2>/dev/null | sed -e 's/|direct$//' -e 's/,direct$//')"
export GOPROXY

NICE=(nice -n 19)


# $1 = component dir name; remaining args: binaries that must exist.
is_built() {
  local dir="$CACHE/$1"; shift
  [[ -f "$dir/.done" ]] || return 1
  local b; for b in "$@"; do
    if [[ "$b" == stages ]]; then [[ -f "$dir/stages/pod-ready.yaml" ]] || return 1
    else [[ -x "$dir/bin/$b" ]] || return 1; fi
  done
}

timed() { # label, command...
  local label="$1"; shift
  local t0=$SECONDS
  log "building $label (jobs=$JOBS) ..."
  "$@"
  log "built $label in $((SECONDS - t0))s"
}

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

build_kubernetes() {
  local v="$KUBERNETES_VERSION" name="kubernetes-$KUBERNETES_VERSION"
  is_built "$name" "${K8S_BINS[@]}" && return 0
  local dir="$CACHE/$name" work; work="$(mktemp -d "$CACHE/.work-k8s.XXXX")"
  # Only what is missing: a cache made before a binary joined the list (kube-proxy did)
  # builds that one binary, not all six again. A cold build compiles all six in one go.
  # Binaries land in the work dir first and are moved in whole, so an interrupted build
  # never leaves a half-written one beside the .done stamp.
  local missing=() b
  for b in "${K8S_BINS[@]}"; do [[ -x "$dir/bin/$b" && -f "$dir/.done" ]] || missing+=("$b"); done
  mkdir -p "$dir/bin"
  # k8s.io/kubernetes replaces its staging modules with ./staging paths, which
  # only work inside its own tree; a wrapper module points each at the
  # published v0.<minor>.<patch> tag instead.
  local staging="v0.${v#v1.}"
  (
    cd "$work"
    go mod init cairn.local/k8s-build >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@$v"
    "${NICE[@]}" go mod download -json "k8s.io/kubernetes@$v" >/dev/null
    local gomod="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$v.mod"
    local mods
    mods="$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod")"
    [[ -n "$mods" ]] || { log "no staging replaces found in $gomod"; exit 1; }
    local m; for m in $mods; do go mod edit -replace="$m=$m@$staging"; done
    # Same go-directive as upstream so the build behaves as theirs.
    go mod edit -go="$(sed -n 's/^go \(.*\)/\1/p' "$gomod")"
    cat > tools.go <<GO
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    log "resolving Kubernetes $v module graph"
    "${NICE[@]}" go mod tidy -e >/dev/null 2>&1 || true
    # The version stamps matter: the apiserver derives its compatibility
    # version and kubectl its skew warnings from them.
    local pkg ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$v" | cut -d. -f2)"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    # One `go build` for all of them shares the compilation of common packages.
    mkdir -p "$work/out"
    "${NICE[@]}" go build -ldflags="-s -w$ld" -o "$work/out/" "${missing[@]/#/k8s.io/kubernetes/cmd/}"
    for b in "${missing[@]}"; do mv -f "$work/out/$b" "$dir/bin/$b"; done
  )
  rm -rf "$work"
  touch "$dir/.done"
}

build_etcd() {
  local name="etcd-$ETCD_VERSION"
  is_built "$name" etcd && return 0
  local dir="$CACHE/$name" work; work="$(mktemp -d "$CACHE/.work-etcd.XXXX")"
  mkdir -p "$dir/bin"
  (
    cd "$work"
    go mod init cairn.local/etcd-build >/dev/null 2>&1
    cat > main.go <<'GO'
// etcd's own main package, re-homed so it builds from the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    log "resolving etcd $ETCD_VERSION module graph"
    "${NICE[@]}" go mod tidy >/dev/null
    "${NICE[@]}" go build -ldflags="-s -w" -o "$dir/bin/etcd" .
  )
  rm -rf "$work"
  touch "$dir/.done"
}

go_install() { # component-name version binary module-path [extra is_built checks]
  local name="$1-$2" bin="$3" pkg="$4"
  is_built "$name" "$bin" "${@:5}" && return 0
  local dir="$CACHE/$name"
  mkdir -p "$dir/bin"
  GOBIN="$dir/bin" "${NICE[@]}" go install -ldflags="-s -w" "$pkg@$2"
  if [[ "$1" == kwok ]]; then
    # kwok simulates nothing without Stage objects; its "fast" node and pod lifecycles
    # ship in the same module: keep them beside the binary, same version.
    local src="$GOMODCACHE/sigs.k8s.io/kwok@$2/kustomize/stage"
    mkdir -p "$dir/stages"
    cp "$src/node/fast/node-initialize.yaml" \
       "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
       "$src/pod/fast/pod-ready.yaml" "$src/pod/fast/pod-complete.yaml" \
       "$src/pod/fast/pod-delete.yaml" "$dir/stages/"
  fi
  touch "$dir/.done"
}

build_pause() {
  is_built pause pause && return 0
  local dir="$CACHE/pause" work; work="$(mktemp -d "$CACHE/.work-pause.XXXX")"
  mkdir -p "$dir/bin"
  (
    cd "$work"
    go mod init cairn.local/pause >/dev/null 2>&1
    cat > main.go <<'GO'
// The pod sandbox's only process: hold the namespaces open, reap adopted
// children (it is PID 1 when the pod shares its PID namespace) and leave on
// SIGTERM/SIGINT like the upstream pause binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
GO
    "${NICE[@]}" go build -ldflags="-s -w" -o "$dir/bin/pause" .
  )
  rm -rf "$work"
  touch "$dir/.done"
}

mkdir -p "$CACHE"
# One build at a time: `up` from two shells, or the fixture and a developer.
exec 9>"$CACHE/.build.lock"
flock 9

t_all=$SECONDS
is_built pause pause || timed "pause" build_pause
is_built "crictl-$CRICTL_VERSION" crictl || timed "crictl $CRICTL_VERSION" go_install crictl "$CRICTL_VERSION" crictl sigs.k8s.io/cri-tools/cmd/crictl
is_built "kwok-$KWOK_VERSION" kwok stages || timed "kwok $KWOK_VERSION" go_install kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok stages
is_built "etcd-$ETCD_VERSION" etcd || timed "etcd $ETCD_VERSION" build_etcd
is_built "kubernetes-$KUBERNETES_VERSION" "${K8S_BINS[@]}" \
  || timed "Kubernetes $KUBERNETES_VERSION (${#K8S_BINS[@]} binaries; the long one)" build_kubernetes
# Go's build cache is ~4 GiB after this and only speeds up a rebuild at a new version;
# the module cache (downloads, ~1.6 GiB) stays so such a rebuild needs no network.
if [[ -d "$GOCACHE" && "${CAIRN_K8S_KEEP_GOCACHE:-}" != 1 ]]; then
  go clean -cache && rm -rf "$GOCACHE"
fi
log "all binaries present under $CACHE ($((SECONDS - t_all))s)"

#!/usr/bin/env bash
# Fetch Argo Rollouts' controller from the Go module proxy and build it, at bench time only
# (nothing of it is kept in the repo). Prints the binary's path.
#
# `go install .../cmd/rollouts-controller@VERSION` refuses the module: its go.mod pins k8s.io/*
# with replace directives, which `go install pkg@version` does not honour. So the module is
# downloaded (`go mod download`, the proxy's zip) and built inside a writable copy of it.
# v1.10.1 is the newest release whose go.mod accepts the Go here (1.26.8; v1.10.2 wants 1.26.10,
# and GOTOOLCHAIN=local forbids fetching a toolchain).
set -euo pipefail
VERSION=${ARGO_ROLLOUTS_VERSION:-v1.10.1}
CACHE=${CAIRN_BENCH_CACHE:-/var/cache/cairn-bench}
OUT=$CACHE/argo-rollouts-$VERSION
BIN=$OUT/rollouts-controller
if [[ -x $BIN ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
DIR=$(go mod download -json "github.com/argoproj/argo-rollouts@$VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
rm -rf "$OUT/src" && cp -r "$DIR" "$OUT/src" && chmod -R u+w "$OUT/src"
cd "$OUT/src"
# The machine has 2 shared cores: build at the lowest priority, one package at a time unless CI.
PAR=$([[ ${CI:-} == true ]] && nproc || echo 1)
GOFLAGS=-mod=mod nice -n 19 go build -p "$PAR" -trimpath -ldflags "-s -w" -o "$BIN" ./cmd/rollouts-controller >&2
cp -r manifests/crds "$OUT/crds"
echo "$BIN"

#!/usr/bin/env bash
# `podswitch lab` timings (perf/README.md, "The lab"), as wall time of each
# verb with the release binaries (`cargo build --release -p podswitch -p
# cni` first), in a lab named `m` it takes down at the end: `up` of
# the built-in example x3; `apply` of a policy x5, of a pod's label change
# x3, of a Deployment scaled up by one pod x3, of a rolled template (3
# replicas) x2. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PODSWITCH:-$PWD/target/release/podswitch}
D=$(mktemp -d)
trap '$P lab down --name m > /dev/null; rm -rf "$D"' EXIT
ms() { local s=$(date +%s%N); "$@" > /dev/null || echo FAILED; echo $(( ($(date +%s%N) - s) / 1000000 )); }
for i in 1 2 3; do
  $P lab down --name m >/dev/null
  echo "up: $(ms $P lab up --name m) ms"
done
cat > $D/pol.yaml <<'Y'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: demo}
spec: {podSelector: {}, policyTypes: [Ingress]}
Y
for i in 1 2 3 4 5; do
  echo "apply policy: $(ms $P lab apply --name m -f $D/pol.yaml) ms"
  $P lab delete --name m -f $D/pol.yaml > /dev/null
done
web() { printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo}\nspec:\n  replicas: %s\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - {name: web, image: %s, ports: [{name: http, containerPort: 8080}]}\n' "$1" "$2"; }
cli() { printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: demo, labels: {app: client, tier: "%s"}}\nspec: {containers: [{name: client, image: podswitch/echo}]}\n' "$1"; }
for i in 1 2 3; do
  cli t$i > $D/cli.yaml
  echo "apply label: $(ms $P lab apply --name m -f $D/cli.yaml) ms"
done
for n in 4 5 6; do
  web $n podswitch/echo > $D/web.yaml
  echo "apply scale to $n: $(ms $P lab apply --name m -f $D/web.yaml) ms"
done
web 3 podswitch/echo > $D/web.yaml; $P lab apply --name m -f $D/web.yaml > /dev/null
for img in v2 v3; do
  web 3 $img > $D/web.yaml
  echo "apply rollout 3 replicas ($img): $(ms $P lab apply --name m -f $D/web.yaml) ms"
done

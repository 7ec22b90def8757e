#!/usr/bin/env bash
# appc's own conformance suite: builds the ACE validator and actool from the appc spec sources
# Debian packages (golang-github-appc-spec-dev, GOPATH mode, offline), then the two validator
# images `ace-validator-main.aci` and `ace-validator-sidekick.aci` with `actool build`.
#   ci/ace.sh [OUTDIR]     default build/ace
# The image manifests follow the spec's ace/image_manifest_{main,sidekick}.json.in (which the
# Debian package omits): names, event handlers, the `database` mount point, the memory isolator,
# the `www` port and the annotations the validator's metadata checks compare.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/ace}
spec=/usr/share/gocode/src/github.com/appc/spec
[ -d "$spec/ace" ] || { echo "ci/ace.sh: $spec missing (ci/deps.sh installs golang-github-appc-spec-dev)" >&2; exit 1; }
mkdir -p "$out"
export GO111MODULE=off CGO_ENABLED=0 GOPATH=/usr/share/gocode GOFLAGS=
export GOCACHE=${GOCACHE:-/var/cache/rkt-rs/go-build}
go build -trimpath -o "$out/ace-validator" github.com/appc/spec/ace
go build -trimpath -o "$out/actool" github.com/appc/spec/actool

labels='[{"name":"version","value":"0.8.11"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]'
annotations='[{"name":"created","value":"2015-06-15T00:00:00Z"},{"name":"authors","value":"The appc authors"},{"name":"homepage","value":"https://github.com/appc/spec"},{"name":"documentation","value":"https://github.com/appc/spec/tree/master/ace"},{"name":"lorem","value":"ipsum"}]'
mount='[{"name":"database","path":"/db","readOnly":false}]'
for kind in main sidekick; do
  tmp=$(mktemp -d)
  mkdir -p "$tmp/rootfs/opt/acvalidator" "$tmp/rootfs/db"
  install -m 0755 "$out/ace-validator" "$tmp/rootfs/ace-validator"
  if [ "$kind" = main ]; then
    app='{"exec":["/ace-validator","main"],"user":"0","group":"0","workingDirectory":"/opt/acvalidator",
      "eventHandlers":[{"name":"pre-start","exec":["/ace-validator","prestart"]},{"name":"post-stop","exec":["/ace-validator","poststop"]}],
      "environment":[{"name":"IN_ACE_VALIDATOR","value":"correct"}],
      "mountPoints":'"$mount"',
      "ports":[{"name":"www","protocol":"tcp","port":80}],
      "isolators":[{"name":"resource/memory","value":{"limit":"1G"}}]}'
  else
    app='{"exec":["/ace-validator","sidekick"],"user":"0","group":"0","workingDirectory":"/opt/acvalidator",
      "environment":[{"name":"IN_ACE_VALIDATOR","value":"correct"}],
      "mountPoints":'"$mount"'}'
  fi
  printf '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"coreos.com/ace-validator-%s","labels":%s,"app":%s,"annotations":%s}\n' \
    "$kind" "$labels" "$app" "$annotations" > "$tmp/manifest"
  "$out/actool" validate "$tmp/manifest" >/dev/null
  "$out/actool" build --overwrite "$tmp" "$out/ace-validator-$kind.aci"
  rm -rf "$tmp"
done
echo "ci/ace.sh: built $out/ace-validator-{main,sidekick}.aci and $out/actool" >&2

#!/bin/sh
# run-test.sh SOURCE_ROOT: the Kubernetes manifests of packaging/kubernetes
# validate, and every file of tests/kubernetes/invalid is refused (the
# validator can fail). The npm packages come from scripts/deps.sh
# (xmem_install_node_deps: npm ci here).
set -u
here="$1/tests/kubernetes"
if [ ! -d "$here/node_modules/kubernetes-models" ]; then
  echo "Bail out! tests/kubernetes/node_modules missing: run scripts/deps.sh (npm ci)"
  exit 1
fi
echo "1..3"
if node "$here/validate.mjs" "$1"/packaging/kubernetes/*.yaml >&2; then
  echo "ok 1 - packaging/kubernetes validates"
else
  echo "not ok 1 - packaging/kubernetes validates"; bad=1
fi
refused=1
for f in "$here"/invalid/*.yaml; do
  if node "$here/validate.mjs" "$f" >/dev/null; then
    echo "# $f was accepted"; refused=0
  fi
done
if [ $refused = 1 ]; then
  echo "ok 2 - every invalid manifest is refused"
else
  echo "not ok 2 - every invalid manifest is refused"; bad=1
fi
# CRI-O's drop-in is TOML that lets every io.xmem.* annotation through
if python3 - "$1" <<'PY'
import re, sys, tomllib
root = sys.argv[1]
conf = tomllib.load(open(root + "/packaging/kubernetes/crio/10-xmem.conf", "rb"))
rt = conf["crio"]["runtime"]["runtimes"]["xmem"]
keys = set(re.findall(r"`(io\.xmem\.[a-z-]+)`", open(root + "/docs/annotations.md").read()))
missing = keys - set(rt["allowed_annotations"])
assert rt["runtime_path"].endswith("/xmem-runtime"), rt
assert keys and not missing, "not allowed: %s" % sorted(missing)
PY
then
  echo "ok 3 - the CRI-O drop-in parses and allows every io.xmem.* annotation"
else
  echo "not ok 3 - the CRI-O drop-in parses and allows every io.xmem.* annotation"; bad=1
fi
exit ${bad:-0}

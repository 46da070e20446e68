#!/usr/bin/env bash
# Replaces the vendored Scalar API reference bundle (served by the api at /api/docs) with the
# standalone build of the npm package `@scalar/api-reference` at the version given, after
# checking the package tarball against the registry's published integrity (sha512).
# Usage: services/api/assets/scalar/update.sh 1.76.4
# Then build the api (its build script checks the bundle against standalone.js.sha512), run
# `cargo nextest run --workspace -E 'binary(docs_page)'` and commit the four files.
set -euo pipefail
version="${1:?usage: update.sh <version of @scalar/api-reference>}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tarball="https://registry.npmjs.org/@scalar/api-reference/-/api-reference-${version}.tgz"
published="$(npm view "@scalar/api-reference@${version}" dist.integrity)"
curl -fsSL -o "$work/package.tgz" "$tarball"
actual="sha512-$(openssl dgst -sha512 -binary "$work/package.tgz" | base64 -w0)"
if [ "$actual" != "$published" ]; then
  echo "integrity mismatch for $tarball: registry says $published, download is $actual" >&2
  exit 1
fi
tar -xzf "$work/package.tgz" -C "$work" package/dist/browser/standalone.js package/package.json
license="$(node -p "require('$work/package/package.json').license")"
if [ "$license" != "MIT" ]; then
  echo "the package's license is now $license, not MIT: review before vendoring" >&2
  exit 1
fi
cp "$work/package/dist/browser/standalone.js" "$here/standalone.js"
(cd "$here" && sha512sum standalone.js > standalone.js.sha512)
echo "$version" > "$here/VERSION"
echo "vendored @scalar/api-reference $version ($published)"

#!/usr/bin/env bash
# Refreshes the vendored browser libraries from the npm registry, at the versions pinned below.
# Needs npm and network; the build does not: the files it writes are committed, and the binary
# embeds them. Run it after changing a version, then review the diff and commit.
#
#   htm 3.1.1       preact/standalone.module.js: Preact 10 with its hooks and htm, one ES module
#                   (no build step, no bare imports, so no import map and no inline script)
#   pusher-js 8.6.0 dist/web/pusher.min.js: the Pusher browser client (window.Pusher)
#   laravel-echo 2.5.0  dist/echo.iife.js: Echo's browser build (window.Echo)
#
# The versions of pusher-js and laravel-echo are the ones the end-to-end tests in e2e/ install.
set -euo pipefail
cd "$(dirname "$0")"

HTM=3.1.1
PREACT=10.29.8
PUSHER=8.6.0
ECHO=2.5.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unpack() { # package version -> directory
  local dir="$work/$1-$2"
  mkdir -p "$dir"
  (cd "$work" && npm pack --silent "$1@$2" >/dev/null)
  tar xzf "$work/${1//\//-}-$2.tgz" -C "$dir" --strip-components=1
  echo "$dir"
}

htm=$(unpack htm "$HTM")
cp "$htm/preact/standalone.module.js" htm-preact.module.js
cp "$htm/LICENSE" htm.LICENSE
# The standalone module embeds Preact, whose license travels with it.
preact=$(unpack preact "$PREACT")
cp "$preact/LICENSE" preact.LICENSE

pusher=$(unpack pusher-js "$PUSHER")
cp "$pusher/dist/web/pusher.min.js" pusher.min.js
cp "$pusher/LICENCE" pusher-js.LICENSE

echo_dir=$(unpack laravel-echo "$ECHO")
cp "$echo_dir/dist/echo.iife.js" echo.iife.js
cp "$echo_dir/LICENSE.md" laravel-echo.LICENSE

sha256sum htm-preact.module.js pusher.min.js echo.iife.js > SHA256SUMS
echo "vendored: htm $HTM (Preact $PREACT license), pusher-js $PUSHER, laravel-echo $ECHO"

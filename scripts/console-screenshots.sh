#!/usr/bin/env bash
# Regenerates the console's screenshots in book/src/server/ (console-*.png) from a
# headless Chromium driving a real server with data.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p annals-server --test console -- --ignored screenshots_for_the_book

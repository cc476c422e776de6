#!/usr/bin/env bash
# Render the quickstart's cache with the inspector and screenshot it for docs/inspector.md.
#
#   scripts/screenshot_inspector.sh            # writes docs/img/inspector.png
#
# Needs the quickstart's cache (`make quickstart`: outputs/quickstart_prepared/decselfmask) and
# Debian's chromium (installed with apt-get when missing). Environment overrides:
#   CACHE   a cache dir or one examples-* folder   (default: the newest examples-* of the quickstart's cache)
#   N       texts shown                            (default 5)
#   PNG     the screenshot                         (default docs/img/inspector.png)
#   PY      the Python with this package           (default .venv/bin/python)
# The HTML page holds the texts; it is written to a temporary folder and deleted afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
N=${N:-5}
PNG=${PNG:-docs/img/inspector.png}
QUICKSTART_CACHE=outputs/quickstart_prepared/decselfmask

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

if [ -z "${CACHE:-}" ]; then
    # the cache keeps one examples-* folder per set of settings: take the newest finished one
    newest=$(ls -t "$QUICKSTART_CACHE"/examples-*/manifest.json 2>/dev/null | head -n 1 || true)
    if [ -z "$newest" ]; then
        echo "no finished examples-* folder in $QUICKSTART_CACHE: run \`make quickstart\` first" >&2
        exit 1
    fi
    CACHE=$(dirname "$newest")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m axolotl_decselfmask.inspector "$CACHE" --out "$work/page.html" --n "$N"

chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --hide-scrollbars --window-size=1200,2600 \
    --screenshot="$work/shot.png" "file://$(realpath "$work/page.html")" >"$work/chromium.log" 2>&1 \
    || { tail -n 20 "$work/chromium.log" >&2; exit 1; }

# A 256-colour palette keeps the text crisp and the file small (docs images stay under ~400 KB).
mkdir -p "$(dirname "$PNG")"
"$PY" - "$work/shot.png" "$PNG" <<'PYEOF'
import sys
from PIL import Image

img = Image.open(sys.argv[1]).convert("RGB")
# Cut between two text sections (a row of page background across the middle), at most 1700 px down,
# so that the picture ends on a whole text.
bg = img.getpixel((4, 4))
px = img.load()
gaps = [y for y in range(400, min(img.height, 1700)) if all(px[x, y] == bg for x in range(0, img.width, 40))]
if gaps:
    img = img.crop((0, 0, img.width, gaps[-1] + 1))
img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(sys.argv[2], optimize=True)
PYEOF
echo "screenshot: $PNG ($(stat -c %s "$PNG") bytes)"

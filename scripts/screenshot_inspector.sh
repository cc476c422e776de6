#!/usr/bin/env bash
# Make docs/img/inspector.png: the inspector's page for the quickstart's recipe as the code runs it
# today, screenshot with Debian's headless chromium.
#
#   scripts/screenshot_inspector.sh            # writes docs/img/inspector.png (a few minutes on a CPU)
#
# By default it runs `axolotl preprocess` on examples/quickstart.yml (the embedded SmolLM2-135M-Instruct,
# the bundled PubMed abstracts, the method's default relevance, span and masking settings) into a
# temporary folder, so the picture shows what this checkout computes, not an old cache. Installs
# Debian's chromium with apt-get when missing. Environment overrides:
#   RECIPE  the recipe preprocessed                 (default examples/quickstart.yml)
#   CACHE   an existing cache dir or examples-* folder: skip the preprocess and render this one
#   N       texts shown                             (default 5)
#   PNG     the screenshot                          (default docs/img/inspector.png)
#   PY      the Python with this package            (default .venv/bin/python)
# The recipe copy, the cache and the HTML page (it holds the texts) go to a temporary folder that is
# deleted afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac  # absolute (not resolved: a venv's python is a link)
RECIPE=${RECIPE:-examples/quickstart.yml}
N=${N:-5}
PNG=${PNG:-docs/img/inspector.png}
# the model and data are local: never ask the hub
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1} AXOLOTL_DO_NOT_TRACK=${AXOLOTL_DO_NOT_TRACK:-1}

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${CACHE:-}" ]; then
    # the recipe as it is, its prepared data and cache moved into $work (relative paths stay the checkout's)
    "$PY" - "$RECIPE" "$work" <<'PYEOF'
import sys
from pathlib import Path

import yaml

recipe, work = Path(sys.argv[1]), Path(sys.argv[2])
cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
# under $work as the quickstart has it, so that the page's "cache:" line reads as in the quickstart
cfg["dataset_prepared_path"] = str(work / "outputs" / "quickstart_prepared")
cfg["output_dir"] = str(work / "outputs" / "quickstart")
cfg.setdefault("decselfmask", {}).pop("cache_dir", None)  # default: <dataset_prepared_path>/decselfmask
(work / "recipe.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
PYEOF
    echo "preprocessing $RECIPE (relevance, spans, masked examples) into a temporary folder..."
    "$(dirname "$PY")/axolotl" preprocess "$work/recipe.yml" >"$work/preprocess.log" 2>&1 \
        || { tail -n 30 "$work/preprocess.log" >&2; exit 1; }
    where=$work CACHE=outputs/quickstart_prepared/decselfmask
else
    where=.
fi

# the tool's own module: the same whichever command name wraps it
(cd "$where" && "$PY" -m axolotl_decselfmask.tools.inspector "$CACHE" --out "$work/page.html" --n "$N")

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

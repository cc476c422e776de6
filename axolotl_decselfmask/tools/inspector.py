"""See what was masked: one self-contained HTML page from a run's precompute cache.

For each of the first ``--n`` texts the page shows the text with every token's
|relevance| / max as a white-to-orange background (the value in a tooltip), the chosen
spans outlined, and the masked-reconstruction examples built from them (the masked input
with each mask highlighted, and the target the model learns to write).

    axolotl decselfmask inspect CACHE_DIR_OR_EXAMPLES_DIR --out page.html [--n 20]
    axolotl decselfmask inspect --recipe recipe.yml --out page.html

Where the texts come from: the relevance shards hold only offsets and scores, so each
text is rebuilt from one of its masked examples (``examples.jsonl``): the masked text with
each mask replaced by the span's answer gives back the (possibly truncated) text. A cache
written with ``masking.write_jsonl: false`` has no examples: pass ``--texts FILE`` (the pool
file of the run) and the spans are recomputed from the shards with the run's selector and
settings (taken from ``--recipe``, else the defaults).

The page contains the texts: treat it like the data. The command prints only the output
path and counts, never text.
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axolotl_decselfmask.io.files import (
    atomic_write_text,
    read_json,
    read_jsonl,
)
from axolotl_decselfmask.recipe import DEFAULT_PREPARED_PATH
from axolotl_decselfmask.stage1.cache import (
    complete_examples_dirs,
    read_records,
    relevance_dirs,
)
from axolotl_decselfmask.stage1.examples import examples_of_record, usable_scores

Span = tuple[int, int]

# white -> orange: the colour of |relevance| / max = 1
HOT = (255, 140, 0)


class InspectorError(ValueError):
    """A cache or an argument the inspector cannot use; the message says what to pass."""


# ---------------------------------------------------------------------------- the cache


@dataclass
class Source:
    """Where the page's data comes from."""

    relevance_dir: Path
    examples_dir: Path | None  # None: a cache without examples.jsonl (masking.write_jsonl: false)
    manifest: dict = field(default_factory=dict)






def _from_examples_dir(folder: Path) -> Source:
    manifest = read_json(folder / "manifest.json")
    if not isinstance(manifest, dict) or not (folder / "examples.jsonl").is_file():
        raise InspectorError(f"{folder}: no manifest.json and examples.jsonl (an unfinished precompute?)")
    rel = manifest.get("relevance_dir")
    if not rel or not (folder.parent / rel).is_dir():
        raise InspectorError(f"{folder}: its relevance folder {rel!r} is not next to it in {folder.parent}")
    return Source(folder.parent / rel, folder, manifest)


def resolve_source(path: str | Path) -> Source:
    """An examples-* folder, a relevance-* folder, or a cache root holding exactly one of them."""
    p = Path(path)
    if not p.is_dir():
        raise InspectorError(f"{p} is not a folder (give the cache dir or one examples-* folder in it)")
    if (p / "manifest.json").is_file() or (p / "examples.jsonl").is_file():
        return _from_examples_dir(p)
    if any(p.glob("part-*.json")):
        return Source(p, None)
    found = complete_examples_dirs(p)
    if len(found) == 1:
        return _from_examples_dir(found[0])
    if len(found) > 1:
        listing = "\n  ".join(str(d) for d in found)
        raise InspectorError(
            f"{p} holds {len(found)} examples folders (one per set of settings); pass one of them:\n  {listing}"
        )
    rels = relevance_dirs(p)
    if len(rels) == 1:
        return Source(rels[0], None)
    if len(rels) > 1:
        listing = "\n  ".join(str(d) for d in rels)
        raise InspectorError(f"{p} holds no examples.jsonl and {len(rels)} relevance folders; pass one of them:\n  {listing}")
    raise InspectorError(f"{p} holds no examples-* or relevance-* folder of a decselfmask cache")




def recipe_cache_dir(recipe: str | Path) -> tuple[Path, dict]:
    """``decselfmask.cache_dir`` of a recipe (default ``<dataset_prepared_path>/decselfmask``) and its block."""
    import yaml

    with open(recipe, encoding="utf-8") as handle:
        cfg = yaml.safe_load(handle) or {}
    block = cfg.get("decselfmask") or {}
    prepared = cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH
    cache = block.get("cache_dir") or str(Path(prepared) / "decselfmask")
    return Path(cache), dict(block, _model=(block.get("relevance") or {}).get("model") or cfg.get("base_model"))


# ----------------------------------------------------------------------- rebuilding texts


def split_answer(answer: str, spans: list[Span], separator: str) -> list[str]:
    """The answer of each span (answers are joined by ``separator``; lengths come from the spans)."""
    out, pos = [], 0
    for k, (s, e) in enumerate(spans):
        if k:
            if answer[pos : pos + len(separator)] != separator:
                raise InspectorError("an example's answer does not match its spans and separator")
            pos += len(separator)
        out.append(answer[pos : pos + e - s])
        pos += e - s
    if pos != len(answer):
        raise InspectorError("an example's answer does not match its spans")
    return out


def rebuild_text(example: dict, mask_token: str, separator: str) -> tuple[str, list[Span]]:
    """The text an example was made from, and where its masks are in ``masked_text``.

    Uses the span positions, not a search for the mask string, so a text that happens to
    contain the mask string is still rebuilt right.
    """
    masked, spans = example["masked_text"], [tuple(s) for s in example["spans"]]
    answers = split_answer(example["answer"], spans, separator)
    pieces, masks, text_pos, masked_pos = [], [], 0, 0
    for (s, e), answer in zip(spans, answers):
        gap = s - text_pos
        pieces.append(masked[masked_pos : masked_pos + gap])
        masked_pos += gap
        if gap < 0 or masked[masked_pos : masked_pos + len(mask_token)] != mask_token:
            raise InspectorError(f"example of text {example['text_index']}: no mask where its span {s}-{e} starts")
        masks.append((masked_pos, masked_pos + len(mask_token)))
        masked_pos += len(mask_token)
        pieces.append(answer)
        text_pos = e
    pieces.append(masked[masked_pos:])
    return "".join(pieces), masks


def read_texts_file(path: str, column: str, settings: dict) -> list[str]:
    """The pool texts as the precompute saw them, by the pool's own rules (:func:`..stage1.pool.clean_pool`):
    empty texts, test texts (``drop_test_texts_from_pool``) and texts holding the mask string left out,
    then ``max_texts``."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.io.tables import read_table, require_column
    from axolotl_decselfmask.stage1.pool import clean_pool, without_mask_string

    rows = read_table(path, "--texts")
    require_column(rows, column, path, "--text-column")
    config = DecSelfMaskConfig(**{k: v for k, v in settings.items() if not k.startswith("_")})
    texts, _, _ = clean_pool([r[column] for r in rows], config, path, column, skip=without_mask_string)
    return texts


# ----------------------------------------------------------------------------- the views


@dataclass
class ItemView:
    item: str
    offsets: list[Span]
    scores: list[float] | None  # None: non-finite relevance in the cache
    spans: list[Span]
    examples: list[dict]  # each with "masks": positions of the masks in masked_text


@dataclass
class TextView:
    text_index: int
    text: str | None  # None: not recoverable from the cache
    items: list[ItemView]


@dataclass
class Page:
    views: list[TextView]
    n_texts_total: int
    model: str
    settings: dict
    source: str
    damaged_shards: int = 0
    spans_recomputed: bool = False


def _settings_get(settings: dict, *keys, default=None):
    value: Any = settings
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def _recompute_spans(settings: dict):
    """The run's selector and span settings, to recompute spans from the shards."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.registry import get_method, selector_for

    config = DecSelfMaskConfig(**{k: v for k, v in settings.items() if not k.startswith("_")})
    return config, selector_for(config, get_method(config.relevance.method))


def _auto_mask_text(model: str | None) -> str:
    """The text of ``masking.mask_token: auto`` for ``model``'s tokenizer (mask_token.py's rule)."""
    if not model:
        raise InspectorError("the settings say masking.mask_token: auto and no model names the tokenizer "
                             "that resolves it: pass --recipe (its base_model)")
    from transformers import AutoTokenizer

    from axolotl_decselfmask.mask_token import choose_mask_token

    return choose_mask_token(AutoTokenizer.from_pretrained(model)).text


def build_page(source: Source, n: int, texts_path: str | None = None, text_column: str = "text",
               settings: dict | None = None, model: str | None = None) -> Page:
    records, damaged = read_records(source.relevance_dir)
    settings = dict(source.manifest.get("settings") or settings or {})
    # a manifest names the chosen token itself (one without the key predates it: "<mask>"); a recipe may say auto
    mask = _settings_get(settings, "masking", "mask_token", default="<mask>" if source.manifest else "auto")
    if mask == "auto":
        mask = _auto_mask_text(source.manifest.get("model") or model)
        settings["masking"] = {**(settings.get("masking") or {}), "mask_token": mask}
    sep = _settings_get(settings, "masking", "answer_separator", default="\n")
    wanted = sorted({r["text_index"] for r in records})[:n]
    keep = set(wanted)
    by_text: dict[int, list[dict]] = {i: [] for i in wanted}
    for rec in records:
        if rec["text_index"] in keep:
            by_text[rec["text_index"]].append(rec)

    examples: dict[tuple[int, str], list[dict]] = {}
    texts: dict[int, str] = {}
    if source.examples_dir is not None:
        for ex in read_jsonl(source.examples_dir / "examples.jsonl"):
            if ex["text_index"] not in keep:
                continue
            text, masks = rebuild_text(ex, mask, sep)
            if texts.setdefault(ex["text_index"], text) != text:
                raise InspectorError(f"the examples of text {ex['text_index']} rebuild different texts: damaged cache")
            examples.setdefault((ex["text_index"], ex["item"]), []).append(dict(ex, masks=masks))

    pool = None
    if texts_path:
        pool = read_texts_file(texts_path, text_column, settings)
    for i in wanted:
        end = max((o[1] for rec in by_text[i] for o in rec["offsets"]), default=0)
        if i not in texts and pool is not None:
            if i >= len(pool) or len(pool[i]) < end:
                raise InspectorError(
                    f"--texts does not match the cache: text {i} is missing or shorter than its token offsets "
                    "(same file, column and max_texts as the run?)"
                )
            texts[i] = pool[i][:end]
        if i in texts and len(texts[i]) < end:
            raise InspectorError(f"text {i} rebuilt from its examples is shorter than its token offsets: damaged cache")

    recompute = source.examples_dir is None
    if recompute:
        if pool is None:
            raise InspectorError(
                f"{source.relevance_dir} has no examples.jsonl next to it (masking.write_jsonl: false): "
                "pass the run's pool file with --texts (and --text-column)"
            )
        config, select = _recompute_spans(settings)
        settings = config.model_dump(exclude={"classification"})

    views = []
    for i in wanted:
        items = []
        for rec in by_text[i]:
            offsets = [tuple(o) for o in rec["offsets"]]
            spans: list[Span] = []
            exs = examples.get((i, rec["item"]), [])
            if recompute and i in texts and usable_scores(rec["scores"]):
                spans, rows = examples_of_record(texts[i], rec, config, select)
                spans = [tuple(sp) for sp in spans]
                m = config.masking
                exs = [dict(row, masks=rebuild_text(row, m.mask_token, m.answer_separator)[1]) for row in rows]
            else:
                spans = sorted({tuple(s) for ex in exs for s in ex["spans"]})
            items.append(ItemView(rec["item"], offsets, rec["scores"], spans, exs))
        views.append(TextView(i, texts.get(i), items))
    n_total = source.manifest.get("n_texts") or (len({r["text_index"] for r in records}))
    return Page(views, n_total, str(source.manifest.get("model") or model or "unknown"), settings,
                str(source.examples_dir or source.relevance_dir), damaged, recompute)


# ------------------------------------------------------------------------------ the HTML


def colour(t: float) -> str:
    """White (0) to orange (1); each channel is monotone, so a higher value is never lighter."""
    t = min(1.0, max(0.0, float(t)))
    return "#" + "".join(f"{round(255 + t * (c - 255)):02x}" for c in HOT)


def token_strengths(scores, offsets: list[Span], text_len: int) -> list[float | None]:
    """|r| / max over the tokens inside the text; None for tokens outside it."""
    inside = [min(e, text_len) > max(s, 0) for s, e in offsets]
    vals = [abs(float(v)) if ok else 0.0 for v, ok in zip(scores, inside)]
    top = max(vals, default=0.0)
    return [(v / top if top > 0 else 0.0) if ok else None for v, ok in zip(vals, inside)]


def render_heat(text: str, scores, offsets: list[Span], spans: list[Span]) -> str:
    """The text, each token coloured by |relevance| / max, each span in an outlined box."""
    esc = html.escape
    strengths = token_strengths(scores, offsets, len(text)) if scores is not None else [None] * len(offsets)
    cover: list[int | None] = [None] * len(text)  # the token each character belongs to
    for k, ((s, e), t) in enumerate(zip(offsets, strengths)):
        if t is None:
            continue
        for c in range(max(0, s), min(len(text), e)):
            if text[c].isspace():  # a token's leading space stays white: the words read as words
                continue
            prev = cover[c]
            if prev is None or t > (strengths[prev] or 0.0):
                cover[c] = k
    in_span: list[Span | None] = [None] * len(text)
    for s, e in spans:
        for c in range(s, min(e, len(text))):
            in_span[c] = (s, e)
    out: list[str] = []
    c = 0
    while c < len(text):
        span = in_span[c]
        if span is not None:
            out.append(f'<span class="span" data-span="{span[0]}-{span[1]}">')
        while c < len(text) and in_span[c] == span:
            k = cover[c]
            d = c
            while d < len(text) and cover[d] == k and in_span[d] == span:
                d += 1
            piece = esc(text[c:d])
            if k is None:
                out.append(piece)
            else:
                t = strengths[k]
                r = float(scores[k])
                out.append(f'<span class="tok" data-tok="{k}" style="background:{colour(t)}" '
                           f'title="relevance {r:.4g} ({t:.2f} of max)">{piece}</span>')
            c = d
        if span is not None:
            out.append("</span>")
    return "".join(out)


def render_masked(masked_text: str, masks: list[Span]) -> str:
    out, pos = [], 0
    for s, e in masks:
        out.append(html.escape(masked_text[pos:s]))
        out.append(f'<mark class="mask">{html.escape(masked_text[s:e])}</mark>')
        pos = e
    out.append(html.escape(masked_text[pos:]))
    return "".join(out)


CSS = """
body{font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
 background:#f4f4f6;margin:0;padding:20px 28px}
h1{font-size:21px;margin:0 0 4px}
.summary{color:#444;margin:0 0 10px}
.note{color:#8a4b00;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:18px;align-items:center;background:#fff;border:1px solid #ddd;
 border-radius:6px;padding:8px 12px;margin-bottom:16px;font-size:13px}
.scale{display:inline-block;width:160px;height:14px;border:1px solid #ccc;vertical-align:middle;margin:0 6px;
 background:linear-gradient(to right,#ffffff,#ff8c00)}
section.text{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px 16px;margin-bottom:16px}
section.text h2{font-size:16px;margin:0 0 6px}
.item{margin-top:6px}
.item h3{font-size:14px;margin:6px 0 2px;color:#333;font-weight:600}
.item h3 .name{background:#eef2fa;border-radius:4px;padding:1px 6px;font-weight:500}
.meta{color:#666;font-size:12.5px;margin-bottom:6px}
.heat,.masked,.answer{white-space:pre-wrap;word-wrap:break-word}
.heat{line-height:1.9;padding:6px 8px;border:1px solid #eee;border-radius:4px}
.tok{border-radius:2px}
.span{border:2px solid #1f4fbf;border-radius:4px;padding:0 1px;
 -webkit-box-decoration-break:clone;box-decoration-break:clone}
.examples{margin-top:8px}
.example{display:grid;grid-template-columns:110px 1fr;gap:2px 10px;padding:6px 8px;margin-top:6px;
 background:#fafafa;border-left:3px solid #1f4fbf;border-radius:3px;font-size:13.5px}
.label{color:#666;font-size:12px;text-transform:uppercase;letter-spacing:.04em;padding-top:2px}
mark.mask{background:#1f4fbf;color:#fff;border-radius:3px;padding:0 3px;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
.answer{font-weight:600;color:#0b3a8f}
.missing{color:#8a4b00;font-style:italic}
"""


def _settings_line(settings: dict) -> str:
    g = lambda *k: _settings_get(settings, *k)  # noqa: E731
    parts = [
        f"relevance {g('relevance', 'method') or 'grad_x_input'} ({g('relevance', 'target') or 'sum_logprob'}"
        + (", completion lead-in" if g("relevance", "prompt_style") == "completion" else "") + ")",
        f"spans {g('spans', 'selector') or 'hysteresis'} sigma {g('spans', 'sigma')}"
        # a manifest written before spans.truncate existed was made with the 9-tap kernel
        f" (truncate {g('spans', 'truncate') or 4.0}), high {g('spans', 'high')}, "
        f"low {g('spans', 'low')}" + (", rescaled" if g("spans", "rescale_after_smoothing") else ""),
        f"mask {g('masking', 'mask_token')!r}, {g('masking', 'spans_per_example')} span(s) per example",
    ]
    return "; ".join(parts)


def render_page(page: Page) -> str:
    esc = html.escape
    n_spans = sum(len(it.spans) for v in page.views for it in v.items)
    n_examples = sum(len(it.examples) for v in page.views for it in v.items)
    body = [
        "<h1>DecSelfMask: what was masked</h1>",
        f'<p class="summary"><b>{len(page.views)}</b> of {page.n_texts_total} texts shown &middot; '
        f"<b>{n_spans}</b> spans &middot; <b>{n_examples}</b> reconstruction examples &middot; "
        f"model <code>{esc(page.model)}</code><br>{esc(_settings_line(page.settings))}<br>"
        f'<span style="color:#888">cache: {esc(page.source)}</span></p>',
    ]
    if page.spans_recomputed:
        body.append('<p class="note">Spans recomputed from the relevance shards (the cache has no examples.jsonl).</p>')
    if page.damaged_shards:
        body.append(f'<p class="note">{page.damaged_shards} relevance shard(s) failed their checksum and are left out.</p>')
    body.append(
        '<div class="legend"><span>|relevance| / max of the text: 0<span class="scale"></span>1</span>'
        '<span><span class="span">chosen span</span> (masked)</span>'
        f'<span><mark class="mask">{esc(_settings_get(page.settings, "masking", "mask_token", default="<mask>"))}'
        "</mark> mask in the model's input</span><span>hover a word for its relevance</span></div>"
    )
    for view in page.views:
        body.append(f'<section class="text" id="text-{view.text_index}" data-text-index="{view.text_index}">')
        items = ", ".join(it.item for it in view.items)
        body.append(f"<h2>Text {view.text_index} <span style=\"font-weight:400;color:#555\">&middot; item: "
                    f"{esc(items)}</span></h2>")
        for it in view.items:
            body.append(f'<div class="item" data-item="{esc(it.item)}">')
            if len(view.items) > 1:
                body.append(f'<h3>item <span class="name">{esc(it.item)}</span></h3>')
            top = max((abs(float(v)) for v in it.scores), default=0.0) if it.scores is not None else None
            meta = f"{len(it.offsets)} tokens &middot; {len(it.spans)} span(s) &middot; {len(it.examples)} example(s)"
            meta += f" &middot; max |relevance| {top:.4g}" if top is not None else " &middot; relevance not finite: skipped"
            body.append(f'<div class="meta">{meta}</div>')
            if view.text is None:
                body.append('<p class="missing">The text is not in the cache (no masked example was made from it); '
                            "pass --texts to show it.</p>")
            else:
                body.append(f'<div class="heat">{render_heat(view.text, it.scores, it.offsets, it.spans)}</div>')
            if it.examples:
                body.append('<div class="examples">')
                for ex in it.examples:
                    body.append(
                        '<div class="example"><div class="label">masked input</div>'
                        f'<div class="masked">{render_masked(ex["masked_text"], ex["masks"])}</div>'
                        '<div class="label">target</div>'
                        f'<div class="answer">{esc(ex["answer"])}</div></div>'
                    )
                body.append("</div>")
            body.append("</div>")
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>DecSelfMask inspector</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="axolotl decselfmask inspect",
        description="Render an HTML page of relevance heatmaps, chosen spans and reconstruction targets "
        "from a decselfmask cache. The page contains the texts: treat it like the data.",
    )
    ap.add_argument("cache", nargs="?", help="the cache dir (decselfmask.cache_dir), or one examples-*/relevance-* folder in it")
    ap.add_argument("--recipe", help="an Axolotl recipe: its decselfmask.cache_dir and settings")
    ap.add_argument("--out", required=True, help="the HTML file to write")
    ap.add_argument("--n", type=int, default=20, help="show the first n texts (default 20)")
    ap.add_argument("--texts", help="the run's pool file (jsonl/csv/...), needed when the cache has no examples.jsonl")
    ap.add_argument("--text-column", default="text")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    settings, model = None, None
    try:
        if args.recipe:
            cache_dir, block = recipe_cache_dir(args.recipe)
            model = block.pop("_model", None)
            settings = block
            where = args.cache or cache_dir
        elif args.cache:
            where = args.cache
        else:
            ap.error("give the cache dir or --recipe")
        source = resolve_source(where)
        page = build_page(source, args.n, args.texts, args.text_column, settings, model)
        atomic_write_text(args.out, render_page(page))
    except (InspectorError, OSError) as exc:
        print(f"inspector: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # InputError from reading --texts, a bad setting
        print(f"inspector: {exc}", file=sys.stderr)
        return 2
    n_spans = sum(len(it.spans) for v in page.views for it in v.items)
    n_examples = sum(len(it.examples) for v in page.views for it in v.items)
    missing = sum(v.text is None for v in page.views)
    print(f"inspector: wrote {args.out}: {len(page.views)} of {page.n_texts_total} texts, {n_spans} spans, "
          f"{n_examples} examples" + (f", {missing} texts not recoverable (pass --texts)" if missing else ""))
    if page.damaged_shards:
        print(f"inspector: {page.damaged_shards} relevance shards failed their checksum and were left out", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

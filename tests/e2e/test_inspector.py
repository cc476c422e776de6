"""The inspector page, rendered from a real precompute cache (tiny random Llama, real abstracts)."""

import json
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import DATA, ROOT

ITEMS = ["neoplasms", "cardiovascular diseases"]
SCRIPT = "<script>alert('x')</script>"
N_SHOWN = 4


# ------------------------------------------------------------------ a small HTML tree


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag=None, cls=None):
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                    out.append(c)
                out.extend(c.find_all(tag, cls))
        return out


class TreeBuilder(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(page: str) -> Node:
    builder = TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.cur is builder.root, "unclosed elements"
    return builder.root


def luminance(css: str) -> float:
    h = css.split("background:")[1].strip().lstrip("#")[:6]
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# ------------------------------------------------------------------------ the caches


def _texts():
    rows = (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()[:6]
    texts = [json.loads(l)["text"][:300] for l in rows]
    texts[1] = f"Note {SCRIPT} & <b>bold</b> claim. " + texts[1][:200]
    return texts


def _cfg(**masking):
    from axolotl_decselfmask.args import DecSelfMaskConfig

    return DecSelfMaskConfig(
        items=ITEMS, items_per_text=2, relevance={"shard_size": 4, "batch_size": 4},
        spans={"rescale_after_smoothing": True}, masking={"spans_per_example": 2, **masking},
    )


def _precompute(cache, tiny_llama, cfg):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.stage1.precompute import run_precompute

    return run_precompute(_texts(), cfg, AutoTokenizer.from_pretrained(tiny_llama), str(tiny_llama), cache,
                          progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("inspector-cache")
    result = _precompute(root, tiny_llama, _cfg())
    return root, result


def _records(root):
    recs = {}
    for part in sorted(root.glob("relevance-*/part-*.json")):
        for r in json.loads(part.read_text())["records"]:
            recs[(r["text_index"], r["item"])] = r
    return recs


def _blocks(tree):
    sections = tree.find_all("section", "text")
    return sections, {
        (int(s.attrs["data-text-index"]), b.attrs["data-item"]): b for s in sections for b in s.find_all("div", "item")
    }


# ------------------------------------------------------------------------------ tests


def test_page_from_examples_cache(cache, tmp_path, capsys):
    from axolotl_decselfmask.stage1.examples import unmask
    from axolotl_decselfmask.tools.inspector import main

    root, result = cache
    out = tmp_path / "page.html"
    assert main([str(root), "--out", str(out), "--n", str(N_SHOWN)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "4 of 6 texts" in printed
    assert "Note" not in printed and "script" not in printed  # counts only, never text
    page = out.read_text(encoding="utf-8")

    # self-contained and escaped
    assert "<script" not in page.lower() and "http" not in page and "url(" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    tree = parse(page)
    assert not tree.find_all("script")
    assert all(b.parent.tag == "p" for b in tree.find_all("b"))  # only the summary's own <b>, not the text's

    sections, blocks = _blocks(tree)
    assert [int(s.attrs["data-text-index"]) for s in sections] == list(range(N_SHOWN))
    assert SCRIPT in sections[1].find_all("div", "heat")[0].text()  # shown as text, not as markup
    records = _records(root)
    assert set(blocks) == {k for k in records if k[0] < N_SHOWN}

    cfg = _cfg()
    sep, mask = cfg.masking.answer_separator, "<|decselfmask_mask|>"  # mask_token: auto, SmolLM2's tokenizer
    assert json.loads((result.directory / "manifest.json").read_text())["settings"]["masking"]["mask_token"] == mask
    shown = [ex for ex in result.examples if ex["text_index"] < N_SHOWN]
    assert {ex["text_index"] for ex in shown} == set(range(N_SHOWN))  # every shown text has an example
    for key, block in blocks.items():
        exs = [ex for ex in shown if (ex["text_index"], ex["item"]) == key]
        outlined = {o.attrs["data-span"]: o.text() for o in block.find_all("span", "span")}
        assert set(outlined) == {f"{s}-{e}" for ex in exs for s, e in ex["spans"]}
        heat = block.find_all("div", "heat")[0].text()
        for ex in exs:
            # the heatmap text is the cached text; each span's characters sit in one outlined box
            assert heat == unmask(ex["masked_text"], ex["answer"].split(sep), mask)
            assert sep.join(outlined[f"{s}-{e}"] for s, e in ex["spans"]) == ex["answer"]
            assert all(outlined[f"{s}-{e}"] == heat[s:e] for s, e in ex["spans"])
        # the reconstruction examples: the masks highlighted, the target shown
        rendered = block.find_all("div", "example")
        assert len(rendered) == len(exs)
        for ex, div in zip(exs, rendered):
            marks = div.find_all("mark", "mask")
            assert [m.text() for m in marks] == [mask] * len(ex["spans"])
            assert div.find_all("div", "masked")[0].text() == ex["masked_text"]
            assert div.find_all("div", "answer")[0].text() == ex["answer"]
        # colours are monotone in |relevance|: a higher score is never lighter
        scores = records[key]["scores"]
        toks = [(abs(scores[int(t.attrs["data-tok"])]), luminance(t.attrs["style"])) for t in block.find_all("span", "tok")]
        assert len({lum for _, lum in toks}) > 3
        toks.sort()
        for (a, la), (b, lb) in zip(toks, toks[1:]):
            assert lb <= la or b == a, (a, la, b, lb)
        assert "background:#ff8c00" in "".join(t.attrs["style"] for t in block.find_all("span", "tok"))


def test_cache_root_with_several_runs_asks_for_one(cache, tiny_llama, tmp_path, capsys):
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.tools.inspector import main

    root, _ = cache
    other = tmp_path / "two"
    shutil.copytree(root, other)
    cfg = DecSelfMaskConfig(**{**_cfg().model_dump(), "spans": {"rescale_after_smoothing": True, "high": 0.6}})
    _precompute(other, tiny_llama, cfg)  # reuses the relevance, a second examples folder
    examples = sorted(p.name for p in other.glob("examples-*"))
    assert len(examples) == 2
    assert main([str(other), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in examples) and not (tmp_path / "x.html").exists()
    assert main([str(other / examples[0]), "--out", str(tmp_path / "x.html"), "--n", "2"]) == 0


def test_page_without_examples_jsonl_needs_texts(tmp_path, tiny_llama, cache):
    import yaml

    root = tmp_path / "prepared" / "decselfmask"
    result = _precompute(root, tiny_llama, _cfg(write_jsonl=False))
    assert not list(root.glob("examples-*/examples.jsonl"))
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump({
        "base_model": str(tiny_llama), "dataset_prepared_path": str(tmp_path / "prepared"),
        "decselfmask": {"items": ITEMS, "items_per_text": 2, "spans": {"rescale_after_smoothing": True},
                        "masking": {"spans_per_example": 2, "write_jsonl": False}},
    }))
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts()))
    out = tmp_path / "page.html"
    cmd = [str(Path(sys.executable).parent / "decselfmask"), "inspect", "--recipe", str(recipe), "--out", str(out),
           "--n", "3"]

    missing = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "--texts" in missing.stderr and not out.exists()

    done = subprocess.run(cmd + ["--texts", str(pool), "--text-column", "text"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith(f"inspector: wrote {out}: 3 of 6 texts")
    assert "Note" not in done.stdout + done.stderr

    tree = parse(out.read_text(encoding="utf-8"))
    sections, blocks = _blocks(tree)
    assert len(sections) == 3
    # the spans recomputed from the shards are those of the run (and of the cache with examples)
    assert result.examples == cache[1].examples
    for key, block in blocks.items():
        exs = [ex for ex in result.examples if (ex["text_index"], ex["item"]) == key]
        outlined = {o.attrs["data-span"] for o in block.find_all("span", "span")}
        assert outlined == {f"{s}-{e}" for ex in exs for s, e in ex["spans"]}
        assert [d.text() for d in block.find_all("div", "answer")] == [ex["answer"] for ex in exs]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="headless check needs Debian's chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(cache, tmp_path):
    from axolotl_decselfmask.tools.inspector import main

    root, _ = cache
    page = tmp_path / "page.html"
    assert main([str(root), "--out", str(page), "--n", "3"]) == 0
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    assert shot.is_file() and shot.stat().st_size > 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        from PIL import Image
    except ImportError:
        assert shot.stat().st_size > 5000
        return
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert any(c != (255, 255, 255) for _, c in colours)
    # the heatmap (orange) and the span outlines / masks (blue) were drawn
    assert any(r > 240 and 120 <= g <= 160 and b < 30 for _, (r, g, b) in colours)
    assert any(abs(r - 0x1F) < 12 and abs(g - 0x4F) < 12 and abs(b - 0xBF) < 12 for _, (r, g, b) in colours)


def test_inspector_shows_the_precomputes_texts_when_test_texts_are_dropped(tmp_path, tiny_llama):
    """With drop_test_texts_from_pool the precompute skips pool texts that are test rows; the
    inspector reads the pool by the same rules (stage1/pool.py), so text i is the same text in both."""
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.pool import clean_pool, without_mask_string
    from axolotl_decselfmask.stage1.precompute import run_precompute
    from axolotl_decselfmask.tools.inspector import build_page, resolve_source

    texts = _texts()
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text": texts[i], "label": "neoplasms"}) + "\n" for i in (0, 2)))
    config = DecSelfMaskConfig(
        items=ITEMS, items_per_text=2, relevance={"shard_size": 4, "batch_size": 4},
        spans={"rescale_after_smoothing": True}, masking={"spans_per_example": 2, "write_jsonl": False},
        drop_test_texts_from_pool=True, classification={"test_file": str(test), "labels": ITEMS},
    )
    used, _, _ = clean_pool(texts, config, str(pool), "text", skip=without_mask_string)
    assert used == [texts[i] for i in (1, 3, 4, 5)]
    root = tmp_path / "cache"
    run_precompute(used, config, AutoTokenizer.from_pretrained(tiny_llama), str(tiny_llama), root, progress=False)

    page = build_page(resolve_source(root), 10, texts_path=str(pool), text_column="text",
                      settings=config.model_dump(mode="json"))
    shown = {view.text_index: view.text for view in page.views}
    assert sorted(shown) == [0, 1, 2, 3]
    for i, text in shown.items():
        assert text and used[i].startswith(text), (i, text[:40], used[i][:40])

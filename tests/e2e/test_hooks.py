"""Another package adds a relevance method and a span selector through the plugin hooks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from helpers import base_recipe, data_rows, write_rows

PLUGIN = textwrap.dedent('''
    import re
    import numpy as np
    from axolotl_decselfmask.hookspecs import hookimpl
    from axolotl_decselfmask.relevance.methods import RelevanceMethod


    class EmbeddingNorm(RelevanceMethod):
        """Relevance = norm of each text token's input embedding (no gradient)."""
        name = "embedding_norm"

        def attribute(self, prompts):
            batch = self.batch(prompts)
            return self.text_values(self.embedding(batch.ids).norm(dim=-1), prompts)


    def first_word(scores, offsets, text, settings, rng):
        m = re.search(r"[A-Za-z]+", text)
        return [m.span()] if m else []


    @hookimpl
    def decselfmask_relevance_methods():
        return {"embedding_norm": EmbeddingNorm}


    @hookimpl
    def decselfmask_span_selectors():
        return {"first_word": first_word}
''')

PYPROJECT = textwrap.dedent('''
    [build-system]
    requires = ["setuptools"]
    build-backend = "setuptools.build_meta"
    [project]
    name = "decselfmask-example-hooks"
    version = "0.1"
    [project.entry-points.axolotl_decselfmask]
    example = "decselfmask_example_hooks"
    [tool.setuptools]
    py-modules = ["decselfmask_example_hooks"]
''')


def test_external_plugin_from_a_recipe(tmp_path, tiny_llama):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "decselfmask_example_hooks.py").write_text(PLUGIN)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    # the registry sees it (and the built-ins are still there)
    listed = subprocess.run([sys.executable, "-c", "from axolotl_decselfmask.registry import relevance_methods, "
                             "span_selectors; print(sorted(relevance_methods()), sorted(span_selectors()))"],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert "'embedding_norm'" in listed and "'grad_x_input'" in listed and "'first_word'" in listed

    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    recipe = base_recipe(tmp_path, tiny_llama)
    recipe["decselfmask"]["relevance"]["method"] = "embedding_norm"
    recipe["decselfmask"]["spans"]["selector"] = "first_word"
    recipe["decselfmask"]["classification"]["enabled"] = False
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "preprocess", str(path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    examples = [json.loads(l) for l in next((tmp_path / "prepared").glob("decselfmask/examples-*/examples.jsonl"))
                .read_text().splitlines()]
    pool = [r["text"] for r in data_rows("abstracts_unlabelled.jsonl", n=4)]
    assert len(examples) == 4
    for ex in examples:
        import re

        assert ex["answer"] == re.search(r"[A-Za-z]+", pool[ex["text_index"]]).group()
        assert ex["masked_text"].startswith("<|decselfmask_mask|>") or ex["masked_text"][0] != pool[ex["text_index"]][0]

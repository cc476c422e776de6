"""`axolotl decselfmask COMMAND`, as a user types it: Axolotl's own `axolotl` command finds the group
through the `axolotl.cli_commands` entry point, each command hands its arguments to its tool (whose
argparse answers `--help`), the old `python -m axolotl_decselfmask.X` forms still run after one
deprecation line, and a missing extra is one line that names it. `axolotl decselfmask predict`
labelling notes is tests/e2e/test_own_data_path.py (its trained run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from axolotl_decselfmask.cli import COMMANDS

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
#: a line each tool's own --help prints
HELP_MARKS = {
    "predict": "--most-uncertain",
    "evaluate": "LABELLED_FILE",
    "inspect": "--recipe",
    "precompute": "--wait-timeout",
    "models": "usage: axolotl decselfmask models",
    "quickstart": "--no-model",
    "experiments": "{run,report}",
    "bench": "relevance,items,profile,dtype",
    "config-reference": "--write",
}



def _run(args, cwd=ROOT, env=ENV, timeout=300):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_axolotl_help_lists_the_group_and_the_group_lists_every_command():
    top = _run([BIN / "axolotl", "--help"])
    assert top.returncode == 0, top.stderr[-3000:]
    assert any(line.split()[:1] == ["decselfmask"] for line in top.stdout.splitlines())
    group = _run([BIN / "axolotl", "decselfmask", "--help"])
    assert group.returncode == 0, group.stderr[-3000:]
    listed = [line.split()[0] for line in group.stdout.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert sorted(listed) == sorted(COMMANDS) == sorted(HELP_MARKS)


@pytest.mark.parametrize("name", sorted(HELP_MARKS))
def test_each_command_answers_its_own_help(name):
    proc = _run([BIN / "axolotl", "decselfmask", name, "--help"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage:" in proc.stdout and HELP_MARKS[name] in proc.stdout, proc.stdout[-3000:]
    assert f"usage: axolotl decselfmask {name}" in proc.stdout


def test_the_console_script_runs_a_command_with_its_arguments(tmp_path):
    proc = _run([BIN / "decselfmask", "quickstart", tmp_path / "qs", "--no-model"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "qs" / "examples" / "quickstart.yml").read_bytes() == (
        ROOT / "examples" / "quickstart.yml").read_bytes()
    # the tool's own exit code and message come through (argparse: 2, the missing argument named)
    bad = _run([BIN / "decselfmask", "quickstart"])
    assert bad.returncode == 2 and "dir" in bad.stderr


def test_an_old_python_m_path_prints_one_deprecation_line_and_still_works():
    proc = _run([sys.executable, "-m", "axolotl_decselfmask.models", "--help"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    deprecations = [line for line in proc.stderr.splitlines() if "deprecated" in line]
    assert deprecations == ["python -m axolotl_decselfmask.models is deprecated and goes in the next release: "
                            "use `axolotl decselfmask models --help`"]
    assert "usage: axolotl decselfmask models" in proc.stdout


def test_an_old_import_still_finds_the_tool(tmp_path):
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n from axolotl_decselfmask.quickstart import examples_dir\nexcept DeprecationWarning as w:\n"
            " print('warned:', w)\n"
            "warnings.simplefilter('ignore'); from axolotl_decselfmask.quickstart import examples_dir\n"
            "print(examples_dir())")
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned, folder = proc.stdout.splitlines()
    assert warned == ("warned: axolotl_decselfmask.quickstart is deprecated: import examples_dir from "
                      "axolotl_decselfmask.tools.quickstart")
    assert Path(folder, "quickstart.yml").is_file()


@pytest.fixture()
def without_extras(tmp_path):
    """An interpreter that sees the package and click, and nothing else that is installed (`python -S`):
    matplotlib and psutil are not there, as after `pip install axolotl-decselfmask` without the extra."""
    import click

    site = tmp_path / "site"
    site.mkdir()
    (site / "axolotl_decselfmask").symlink_to(ROOT / "axolotl_decselfmask")
    (site / "click").symlink_to(Path(click.__file__).parent)
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    return [sys.executable, "-S"], {**env, "PYTHONPATH": str(site)}


@pytest.mark.parametrize("name,args,missing", [("experiments", ["run", "grid.yml", "--out", "o"], "matplotlib"),
                                               ("bench", ["relevance", "--json", "o"], "psutil")])
def test_a_missing_extra_is_one_line_that_names_it(without_extras, tmp_path, name, args, missing):
    python, env = without_extras
    new = _run(python + ["-m", "axolotl_decselfmask.cli", name, *args], cwd=tmp_path, env=env)
    expected = (f"Error: axolotl decselfmask {name} needs {missing}, which is not installed: "
                "pip install -e '.[experiments]' in a checkout (or the wheel's path with [experiments])")
    assert new.returncode == 1 and new.stderr.strip() == expected, new.stderr[-3000:]
    old = _run(python + ["-m", f"axolotl_decselfmask.{name}", *args], cwd=tmp_path, env=env)
    lines = old.stderr.strip().splitlines()
    assert old.returncode == 1 and len(lines) == 2 and "deprecated" in lines[0] and lines[1] == expected
    assert not (tmp_path / "o").exists()


def test_the_launcher_form_of_the_commands_is_a_module_too():
    """`python -m axolotl_decselfmask.cli COMMAND` (for launchers that start a module) is the same group."""
    proc = _run([sys.executable, "-m", "axolotl_decselfmask.cli", "config-reference", "--help"])
    assert proc.returncode == 0 and "--write" in proc.stdout, proc.stderr[-3000:]
    assert shutil.which("decselfmask", path=str(BIN)), "the console script is installed (pip install -e .)"

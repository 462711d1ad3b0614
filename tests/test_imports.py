"""Every module of the package imports, every experiment script parses its flags, and
the command's sub-commands answer `--help`: the fast tier (`pytest -m "not slow"`)
touches all of them even where their end-to-end tests are marked slow."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import jaxdepth
from experiment_scripts import EXPERIMENTS, load_experiment
from jaxdepth.cli import main

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxdepth.__path__, "jaxdepth.")
                 if not m.name.endswith("__main__"))
SCRIPTS = sorted(p.stem for p in EXPERIMENTS.glob("*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"


@pytest.mark.parametrize("name", SCRIPTS)
def test_experiment_script_parses_its_flags(name, capsys):
    module = load_experiment(name, f"experiment_{name}")
    assert module.__doc__
    entry = getattr(module, "parse_args", None) or module.main
    with pytest.raises(SystemExit) as exit_:
        entry(["--help"])
    assert exit_.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["train"], ["predict"], ["convert", "monodepth2"],
                                     ["convert", "deeplabv3"]])
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0 and "usage: jaxdepth" in capsys.readouterr().out

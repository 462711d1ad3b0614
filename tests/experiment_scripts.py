"""The scripts under `experiments/` loaded as modules (they are scripts, not a package)."""
import importlib.util
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).parents[1] / "experiments"


def load_experiment(name: str, module_name: str | None = None):
    """`experiments/<name>.py` as a fresh module (`module_name`: its name, default `name`)."""
    spec = importlib.util.spec_from_file_location(module_name or name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module

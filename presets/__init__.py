"""The presets advkd ships (one YAML file per preset; ``advkd presets list`` shows them).

pyproject.toml installs this top-level folder as the package ``advkd.presets`` (``package-dir``):
a wheel holds the files as ``advkd/presets/*.yaml``, an editable install reads them here. This
file only makes the folder an importable package in both, so ``importlib.resources`` finds it.
"""

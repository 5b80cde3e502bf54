"""One module per pipeline command (``python -m usdh <command>``), imported only when it runs.

Each module has ``run(params, ...)``, the command, and ``outputs(params, ...)``, the paths it
writes (from :mod:`usdh.layout`), which ``tests/test_layout.py`` checks against ``dvc.yaml``. A
stage's code dependencies are the import closure of its module (``tests/test_dvc_deps.py``), so
each module imports only what its command runs.
"""

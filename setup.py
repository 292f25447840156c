"""Installs the top-level folders as the `pycontainerd` namespace.

core/, pkg/, plugins/, api/, client/ and testing/ sit at the top of the repository;
src/pycontainerd/ holds one symlink to each, so the import root is an ordinary
src layout. That matters at every start of the daemon and of pyctr: for a
plain src layout `pip install -e .` writes a static path into a .pth file,
where a remapped package_dir needs setuptools' import-hook finder, which
costs ~20 ms of imports (pathlib and friends) before our first line runs.
pyproject.toml cannot compute the sub-packages of a namespace, so it is done here.
"""

from setuptools import find_packages, setup

FOLDERS = ("core", "pkg", "plugins", "api", "client", "testing")

packages = ["pycontainerd"]  # the namespace itself: setuptools then sees a plain src layout
for folder in FOLDERS:
    packages.append(f"pycontainerd.{folder}")
    packages += [f"pycontainerd.{folder}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"": "src"}, package_data={"pycontainerd.api": ["**/*.proto"]})

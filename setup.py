"""Maps the top-level folders under the pycontainerd namespace.

core/, plugins/, api/, client/ and testing/ sit at the top of the repository
but are installed as pycontainerd.core, pycontainerd.plugins, ... so nothing
lands in site-packages as a bare `core` or `plugins`. pyproject.toml cannot
compute the list of sub-packages under a remapped folder, so it is done here.
"""

from setuptools import find_packages, setup

FOLDERS = ("core", "plugins", "api", "client", "testing")

packages, package_dir = [], {}
for folder in FOLDERS:
    top = f"pycontainerd.{folder}"
    package_dir[top] = folder
    packages.append(top)
    packages += [f"{top}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir, package_data={"pycontainerd.api": ["**/*.proto"]})

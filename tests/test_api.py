"""The public API is importable from the top-level package, and each name from one place."""

import importlib
import subprocess
import sys

import pytest

import spherelab


@pytest.mark.parametrize("name", spherelab.__all__)
def test_every_public_name_loads_from_the_top_level_package(name):
    value = getattr(spherelab, name)
    home = importlib.import_module(value.__module__)
    assert getattr(home, name) is value  # the object itself, defined where it lives


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        spherelab.no_such_thing  # noqa: B018


def test_importing_the_package_or_its_report_does_not_import_torch():
    code = "import sys, spherelab, spherelab.report, spherelab.regimes, spherelab.io; "
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""`cmdseg_nb.__all__` is exactly the public names, sorted (as httpx tests its exports)."""
import pytest

import cmdseg_nb


def test_all_is_sorted_and_exactly_the_public_names():
    assert cmdseg_nb.__all__ == sorted(cmdseg_nb.__all__)
    public = {n for n in dir(cmdseg_nb) if not n.startswith("_")}
    modules = {"cli", "testing", "widgets"}  # submodules, imported on demand
    assert public - modules == set(cmdseg_nb.__all__)


def test_every_public_name_has_a_docstring():
    for name in cmdseg_nb.__all__:
        assert getattr(cmdseg_nb, name).__doc__, name


def test_importing_the_package_does_not_import_widgets_testing_or_the_sender():
    import subprocess
    import sys
    code = ("import sys, cmdseg_nb; "
            "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'cmdseg_nb.testing', "
            "'cmdseg_nb.widgets', 'httpx', 'sqlglot', 'cmdseg_nb._send'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve_on_first_use():
    import subprocess
    import sys
    code = "import cmdseg_nb; print(cmdseg_nb.send.__module__, cmdseg_nb.to_sql.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cmdseg_nb._send", "cmdseg_nb._to_sql"]
    with pytest.raises(AttributeError, match="no_such_name"):
        cmdseg_nb.no_such_name  # noqa: B018

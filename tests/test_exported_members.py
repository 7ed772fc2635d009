"""`cmdseg_nb.__all__` is exactly the public names, sorted (as httpx tests its exports)."""
import cmdseg_nb


def test_all_is_sorted_and_exactly_the_public_names():
    assert cmdseg_nb.__all__ == sorted(cmdseg_nb.__all__)
    public = {n for n in dir(cmdseg_nb) if not n.startswith("_")}
    modules = {"cli", "testing", "widgets"}  # submodules, imported on demand
    assert public - modules == set(cmdseg_nb.__all__)


def test_every_public_name_has_a_docstring():
    for name in cmdseg_nb.__all__:
        assert getattr(cmdseg_nb, name).__doc__, name


def test_importing_the_package_does_not_import_widgets_or_testing():
    import subprocess
    import sys
    code = ("import sys, cmdseg_nb; "
            "print(sorted(m for m in sys.modules if m.startswith(('ipywidgets', 'cmdseg_nb.testing', "
            "'cmdseg_nb.widgets'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

import subprocess
import sys
import tomllib

from conftest import REPO


def test_every_code_folder_is_packaged():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = conf["tool"]["setuptools"]["package-dir"]
    packages = conf["tool"]["setuptools"]["packages"]
    folders = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").exists())
    assert folders == ["datasets", "features", "models", "serving", "training"]
    for folder in folders:
        assert mapping[f"flockwatch.{folder}"] == folder
        assert f"flockwatch.{folder}" in packages


def test_cli_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; "
            "from flockwatch.serving.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'lightgbm', 'mlflow', 'nfstream') if m in sys.modules];"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_has_help():
    from typer.testing import CliRunner

    from flockwatch.serving.cli import app

    runner = CliRunner()
    for cmd in (["extract"], ["inventory"], ["score"], ["serve"], ["demo"], ["evaluate"],
                ["train", "classifier"], ["train", "baseline"], ["datasets", "synthesize"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage" in r.output


def test_every_option_is_explained():
    """--help explains every option of every command, not just lists it."""
    import typer.main

    from flockwatch.serving.cli import app

    missing = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        for p in getattr(cmd, "params", []):
            if p.param_type_name == "option" and p.name != "help" and not p.help:
                missing.append(f"{' '.join(path)} {p.opts[0]}")

    walk(typer.main.get_command(app), [])
    assert not missing, missing

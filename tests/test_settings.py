"""Settings (issue 21, "sources do not know the CLI"): one module maps the command line, the hook's
arguments and the Action's inputs to the same :class:`Settings`, through the same value parsers; the
sources below the CLI take settings or narrow values, never import the CLI and never print."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from safemodel_ci import cli, settings
from safemodel_ci.cache import ResultCache
from safemodel_ci.findings import EXIT_USAGE, Severity
from safemodel_ci.hooks import pre_commit

PACKAGE = Path(settings.__file__).resolve().parent


def _usage_error(entry, argv: List[str], capsys: pytest.CaptureFixture[str]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == EXIT_USAGE
    return capsys.readouterr().err


# ---- one parser, one message, every entry point --------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("info", settings.FAIL_ON_INFO),
    ("sometimes", "unknown severity 'sometimes' (expected one of: low, medium, high, critical)"),
])
def test_fail_on_is_refused_alike_by_the_cli_and_the_hook(
        value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_err = _usage_error(cli.main, ["scan", "--fail-on", value, str(tmp_path)], capsys)
    hook_err = _usage_error(pre_commit.main, ["--fail-on", value, "x.pkl"], capsys)
    assert f"safemodel scan: error: argument --fail-on: {message}" in cli_err
    assert f"safemodel-pre-commit: error: argument --fail-on: {message}" in hook_err


def test_the_action_fail_on_input_goes_through_the_same_parser() -> None:
    assert settings.action_fail_on("  critical ") is Severity.CRITICAL
    assert settings.action_fail_on("") is None
    with pytest.raises(settings.InputError, match=r"^input fail-on: info never fails a run$"):
        settings.action_fail_on("info")
    with pytest.raises(settings.InputError) as info:
        settings.action_fail_on("sometimes")
    with pytest.raises(ValueError) as parsed:
        settings.parse_fail_on("sometimes")
    assert str(info.value) == f"input fail-on: {parsed.value}"


def test_the_cli_and_the_action_map_the_same_choices_to_the_same_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "ci.yaml"
    cfg.write_text("fail-on: low\nlimits:\n  max-depth: 3\n")
    args = cli.build_parser().parse_args(["scan", "--fail-on", "critical", "--config", str(cfg),
                                          "--format", "json", "--quiet", str(tmp_path)])
    from_cli = settings.from_namespace(args)
    from_action = settings.from_action_inputs(settings.action_fail_on("critical"), str(cfg))
    for name in ("config_path", "fail_on_flag", "format", "quiet", "no_cache", "excludes", "min_severity"):
        assert getattr(from_cli, name) == getattr(from_action, name), name
    assert from_cli.fail_on is from_action.fail_on is Severity.CRITICAL
    assert from_cli.options.limits.max_depth == from_action.options.limits.max_depth == 3


# ---- what Settings resolve -------------------------------------------------------------------------

def test_fail_on_is_the_flag_else_the_config_else_high(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config here, and /tmp is never searched above it
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("fail-on: critical\n")
    assert settings.Settings(config_path=str(cfg)).fail_on is Severity.CRITICAL
    assert settings.Settings(config_path=str(cfg), fail_on_flag=Severity.LOW).fail_on is Severity.LOW
    assert settings.Settings().fail_on is Severity.HIGH


def test_the_config_is_loaded_once_and_an_override_wins(tmp_path: Path) -> None:
    from safemodel_ci.config import Config, ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("fail-on: sometimes\n")
    # Lazily: a usage error found first is reported as such (the config is not read yet).
    lazy = settings.Settings(config_path=str(bad))
    with pytest.raises(ConfigError):
        assert lazy.fail_on
    override = Config(fail_on=Severity.MEDIUM)
    # The Action's base-branch config replaces the config input: the invalid file is never read.
    chosen = settings.from_action_inputs(None, str(bad), override)
    assert chosen.config is override and chosen.fail_on is Severity.MEDIUM
    plan = chosen.scan_plan()
    assert plan.config is chosen.config and plan.options is chosen.options


@pytest.fixture()
def untrusted_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "shared-cache"
    directory.mkdir()
    directory.chmod(0o777)  # writable by anyone: its entries could be forged
    monkeypatch.setenv("SAFEMODEL_CACHE_DIR", str(directory))
    monkeypatch.delenv("SAFEMODEL_NO_CACHE", raising=False)
    yield directory
    directory.chmod(0o700)


def test_an_untrusted_cache_is_refused_with_a_warning_on_the_command_line(untrusted_cache: Path) -> None:
    warnings: List[str] = []
    cli_settings = settings.Settings(warn=warnings.append)
    assert cli_settings.cache_dir is None and cli_settings.result_cache() is None
    assert len(warnings) == 1
    assert "result cache not used" in warnings[0] and str(untrusted_cache) in warnings[0]
    assert cli_settings.cache_dir is None and len(warnings) == 1  # resolved once, warned once


def test_the_hook_leaves_an_untrusted_cache_to_the_cache_which_refuses_it_silently(
        untrusted_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = pre_commit.build_parser().parse_args(["x.pkl"])
    hook_settings = settings.from_hook_args(args)
    hook_settings.warn = lambda message: pytest.fail(f"the hook warned: {message}")
    assert hook_settings.cache_dir == str(untrusted_cache) and hook_settings.jobs == 1
    assert ResultCache(hook_settings.cache_dir).problem is not None
    monkeypatch.setenv("SAFEMODEL_NO_CACHE", "1")
    assert hook_settings.cache_dir is None
    assert settings.from_hook_args(pre_commit.build_parser().parse_args(["--no-cache"])).cache_dir is None


def test_hook_on_an_untrusted_cache_prints_only_its_findings(
        untrusted_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("model.pkl").write_bytes(pickle.dumps({"weights": [0.5]}, protocol=2))
    assert pre_commit.main(["model.pkl"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and os.listdir(untrusted_cache) == []  # nothing stored in it


# ---- the layers: nothing below the CLI knows it ------------------------------------------------------

def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _imports(path: Path, text: "str | None" = None) -> List[str]:
    """Every module an import statement of ``path`` names (in functions too), made absolute."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: List[str] = []
    source = text if text is not None else path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def test_no_module_of_the_package_imports_the_cli() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or path.name == "cli.py":
            continue
        hits = [m for m in _imports(path) if m == "safemodel_ci.cli" or m.startswith("safemodel_ci.cli.")]
        if hits:
            offenders[str(path.relative_to(PACKAGE))] = hits
    assert offenders == {}


@pytest.mark.parametrize("name", sorted(p.name for p in (PACKAGE / "sources").glob("*.py")) + ["fanout.py"])
def test_sources_take_no_namespace_and_print_nothing(name: str) -> None:
    path = PACKAGE / ("sources" if name != "fanout.py" else "") / name
    assert "argparse" not in _imports(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prints = [n.lineno for n in ast.walk(tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert prints == []


def test_the_walk_sees_a_function_level_import_of_the_cli() -> None:
    """The checks above are not vacuous: the import the sources had (``from .. import cli`` inside a
    function of sources/hub.py) and the other spellings are found."""
    hub = PACKAGE / "sources" / "hub.py"
    for text in ("def f():\n    from .. import cli\n", "from ..cli import main\n",
                 "import safemodel_ci.cli\n", "def g():\n    import argparse\n"):
        found = _imports(hub, text)
        assert any(m == "safemodel_ci.cli" or m == "argparse" for m in found), (text, found)


@pytest.mark.parametrize("columns", [None, "0", "junk", "50", "132"])
def test_help_is_wrapped_to_the_width_shutil_gives(monkeypatch: pytest.MonkeyPatch,
                                                   columns: Optional[str]) -> None:
    """The parsers' formatter gets the width argparse would ask shutil for, without importing it."""
    import argparse
    import shutil

    settings_mod = settings
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert settings_mod._help_width() == shutil.get_terminal_size().columns - 2
    text = "word " * 60
    for cls in (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
        ours = settings_mod.UsageParser(prog="p", description=text, formatter_class=cls).format_help()
        theirs = argparse.ArgumentParser(prog="p", description=text, formatter_class=cls).format_help()
        assert ours == theirs

"""Configuration: every key, errors that name file/line/key, discovery, and the CLI wiring."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import List

import pytest

from safemodel_ci import cli, settings
from safemodel_ci.config import KEYS, Config, ConfigError, find_config, load_config
from safemodel_ci.context import Limits
from safemodel_ci.findings import Severity
from safemodel_ci.rules import RULES

SCHEMA = Path(__file__).resolve().parent.parent / "safemodel_ci" / "schemas" / "config-v1.json"
SHA = "ab" * 32


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_yaml(tmp_path: Path, text: str) -> Config:
    return load_config(str(write(tmp_path / ".safemodel.yaml", text)))


def error_of(tmp_path: Path, text: str, name: str = ".safemodel.yaml") -> ConfigError:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.file == str(path)
    return info.value


FULL = f"""\
# every key
fail-on: medium
allow-globals:
  - global: mypkg.layers.CustomNorm
    reason: our own layer, reviewed in PR 12
  - global: mypkg.blocks.*
    reason: the whole package is ours
ignore:
  - sha256: {SHA}
    reason: legacy checkpoint, reviewed
  - sha256: "sha256:{'CD' * 32}"
    reason: vendor file
    path: ./vendor/model.pt
exclude:
  - tests/fixtures/**
  - "*.tmp"
severity-overrides:
  npy-object-array: medium
  unrecognized-format: low
  pickle-dangerous-global: critical
limits:
  max-seconds-per-file: 60
  max-depth: 3
"""


def test_every_key_is_read(tmp_path: Path) -> None:
    cfg = load_yaml(tmp_path, FULL)
    assert cfg.path == str(tmp_path / ".safemodel.yaml")
    assert cfg.root == str(tmp_path)
    assert cfg.fail_on is Severity.MEDIUM
    assert [(g.name, g.reason) for g in cfg.allow_globals] == [
        ("mypkg.layers.CustomNorm", "our own layer, reviewed in PR 12"),
        ("mypkg.blocks.*", "the whole package is ours")]
    assert [(i.sha256, i.path) for i in cfg.ignores] == [(SHA, None), ("cd" * 32, "vendor/model.pt")]
    assert cfg.ignores[0].origin == ".safemodel.yaml:9"
    assert cfg.excludes == ("tests/fixtures/**", "*.tmp")
    assert dict(cfg.severity_overrides) == {"npy-object-array": Severity.MEDIUM,
                                            "unrecognized-format": Severity.LOW,
                                            "pickle-dangerous-global": Severity.CRITICAL}
    assert cfg.limits == Limits().replace(max_seconds_per_file=60.0, max_depth=3)
    policy = cfg.policy()
    assert policy.allow_globals == frozenset({"mypkg.layers.CustomNorm", "mypkg.blocks.*"})
    assert policy.severity_overrides["unrecognized-format"] is Severity.LOW
    # The policy travels to worker processes and into the cache key.
    assert policy.fingerprint() != Config().policy().fingerprint()


def test_empty_and_default_configs(tmp_path: Path) -> None:
    assert load_yaml(tmp_path, "") == Config(path=str(tmp_path / ".safemodel.yaml"), root=str(tmp_path))
    cfg = load_yaml(tmp_path, "allow-globals:\nignore:\nexclude: []\n")
    assert cfg.allow_globals == () and cfg.ignores == () and cfg.excludes == ()


def test_allowed_global_changes_the_verdict() -> None:
    cfg = Config(allow_globals=(), severity_overrides=())
    assert cfg.policy().classify_global("mypkg.layers", "CustomNorm").rule_id == "pickle-unknown-global"
    from safemodel_ci.config import AllowedGlobal

    allowed = Config(allow_globals=(AllowedGlobal("mypkg.layers.CustomNorm", "ours"),))
    assert allowed.policy().classify_global("mypkg.layers", "CustomNorm").rule_id is None
    wildcard = Config(allow_globals=(AllowedGlobal("mypkg.*", "ours"),))
    assert wildcard.policy().classify_global("mypkg.layers", "Other").rule_id is None


@pytest.mark.parametrize("text, line, key, words", [
    ("fail-on: high\nfial-on: low\n", 2, "fial-on", "did you mean 'fail-on'"),
    ("fail-on: severe\n", 1, "fail-on", "unknown severity"),
    ("fail-on: info\n", 1, "fail-on", "low, medium, high or critical"),
    ("fail-on: [high]\n", 1, "fail-on", "expected a severity"),
    ("allow-globals:\n  - global: a.b\n    reason: ok\n  - global: mypkg.Thing\n", 4,
     "allow-globals[1].reason", "required"),
    ("allow-globals:\n  - mypkg.Thing\n", 2, "allow-globals[0]", "needs a reason"),
    ("allow-globals:\n  - global: mypkg.Thing\n    reason: '  '\n", 3, "allow-globals[0].reason",
     "non-empty"),
    ("allow-globals:\n  - global: 'os system'\n    reason: x\n", 2, "allow-globals[0].global",
     "not module.name"),
    ("allow-globals:\n  - global: Thing\n    reason: x\n", 2, "allow-globals[0].global", "not module.name"),
    ("allow-globals:\n  - global: os.*\n    reason: x\n", 2, "allow-globals[0].global", "by name"),
    ("allow-globals:\n  - global: a.b\n    reason: x\n    note: y\n", 4, "allow-globals[0].note",
     "unknown key"),
    ("allow-globals: mypkg.Thing\n", 1, "allow-globals", "expected a list"),
    ("ignore:\n  - path: models/legacy.pt\n    reason: trusted\n", 2, "ignore[0].sha256",
     "path-only ignore is refused"),
    ("ignore:\n  - models/legacy.pt\n", 2, "ignore[0]", "path-only ignore is refused"),
    ("ignore:\n  - sha256: abc\n    reason: x\n", 2, "ignore[0].sha256", "64 hexadecimal"),
    (f"ignore:\n  - sha256: {SHA}\n", 2, "ignore[0].reason", "required"),
    (f"ignore:\n  - sha256: {SHA}\n    reason: x\n    path: ../outside.pt\n", 4, "ignore[0].path",
     "inside"),
    ("exclude:\n  - ''\n", 2, "exclude[0]", "glob pattern"),
    ("exclude: '*.tmp'\n", 1, "exclude", "expected a list"),
    ("severity-overrides:\n  no-such-rule: low\n", 2, "severity-overrides.no-such-rule",
     "unknown rule id"),
    ("severity-overrides:\n  pickle-dangerous-globl: critical\n", 2,
     "severity-overrides.pickle-dangerous-globl", "did you mean 'pickle-dangerous-global'"),
    ("severity-overrides:\n  npy-object-array: extreme\n", 2, "severity-overrides.npy-object-array",
     "unknown severity"),
    ("severity-overrides:\n  unscanned-limit: low\n", 2, "severity-overrides.unscanned-limit",
     "incomplete"),
    ("severity-overrides: [a]\n", 1, "severity-overrides", "mapping"),
    ("limits:\n  max-depth: -1\n", 2, "limits.max-depth", "positive int"),
    ("limits:\n  max-depth: 2.5\n", 2, "limits.max-depth", "positive int"),
    ("limits:\n  max-speed: 3\n", 2, "limits.max-speed", "unknown limit"),
    ("fail-on: high\nfail-on: low\n", 2, "fail-on", "duplicate key"),
])
def test_invalid_config_names_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                                words: str) -> None:
    err = error_of(tmp_path, text)
    assert (err.line, err.key) == (line, key), str(err)
    assert words in err.message
    assert str(err).startswith(f"{tmp_path / '.safemodel.yaml'}:{line}: {key}: ")


@pytest.mark.parametrize("rule", [r for r in RULES if r.code_execution])
def test_code_execution_rules_cannot_be_lowered(tmp_path: Path, rule) -> None:  # type: ignore[no-untyped-def]
    lower = Severity(rule.severity - 1).name.lower()
    err = error_of(tmp_path, f"severity-overrides:\n  {rule.id}: {lower}\n")
    assert err.key == f"severity-overrides.{rule.id}" and err.line == 2
    assert "cannot be lowered" in err.message and "allow-globals" in err.message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "fail-on: high\nexclude:\n  - a\n - b\n")
    assert err.line == 4 and "invalid YAML" in err.message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = error_of(tmp_path, "- fail-on: high\n")
    assert err.line == 1 and "mapping of settings" in err.message


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "absent.yaml"))


PYPROJECT = f"""\
[project]
name = "demo"
dependencies = ["safemodel-ci"]

[tool.safemodel]
fail-on = "critical"
exclude = ["build/**"]
severity-overrides = {{ npy-object-array = "high" }}

[[tool.safemodel.allow-globals]]
global = "mypkg.Thing"
reason = "ours"

[[tool.safemodel.ignore]]
sha256 = "{SHA}"
reason = "reviewed"
"""


def test_pyproject_table(tmp_path: Path) -> None:
    cfg = load_config(str(write(tmp_path / "pyproject.toml", PYPROJECT)))
    assert cfg.fail_on is Severity.CRITICAL
    assert cfg.excludes == ("build/**",)
    assert dict(cfg.severity_overrides) == {"npy-object-array": Severity.HIGH}
    assert [g.name for g in cfg.allow_globals] == ["mypkg.Thing"]
    assert [i.sha256 for i in cfg.ignores] == [SHA]


def test_pyproject_error_names_the_line_of_the_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, PYPROJECT.replace('"critical"', '"fatal"'), name="pyproject.toml")
    assert (err.line, err.key) == (6, "fail-on")
    extra_key = PYPROJECT.replace('fail-on = "critical"\n', 'fail-on = "critical"\ncolour = 1\n')
    err = error_of(tmp_path, extra_key, name="pyproject.toml")
    assert err.key == "colour" and err.line == 7
    err = error_of(tmp_path, PYPROJECT.replace('reason = "ours"\n', ""), name="pyproject.toml")
    assert err.key == "allow-globals[0].reason" and err.line == 10
    err = error_of(tmp_path, "[tool.safemodel\n", name="pyproject.toml")
    assert "invalid TOML" in err.message and err.line == 1


def test_discovery_walks_up_to_the_repository_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sub = repo / "models" / "deep"
    sub.mkdir(parents=True)
    (repo / ".git").mkdir()
    assert find_config(str(sub)) is None
    # A config above the repository root does not apply to it.
    write(tmp_path / ".safemodel.yaml", "fail-on: low\n")
    assert find_config(str(sub)) is None
    write(repo / ".safemodel.yaml", "fail-on: critical\n")
    assert find_config(str(sub)) == str(repo / ".safemodel.yaml")
    assert load_config(start=str(sub)).fail_on is Severity.CRITICAL
    # A pyproject.toml without [tool.safemodel] is not a config; one with it is.
    write(repo / "models" / "pyproject.toml", '[project]\nname = "x"\n')
    assert find_config(str(sub)) == str(repo / ".safemodel.yaml")
    write(repo / "models" / "pyproject.toml", '[tool.safemodel]\nfail-on = "low"\n')
    assert find_config(str(sub)) == str(repo / "models" / "pyproject.toml")
    # Two configs in one directory: an error, not a guess.
    write(repo / "models" / ".safemodel.yaml", "fail-on: low\n")
    with pytest.raises(ConfigError, match="keep one"):
        find_config(str(sub))


@pytest.mark.parametrize("pattern, excluded, kept", [
    ("tests/fixtures/**", ["tests/fixtures/a.pt", "tests/fixtures/x/y.pkl"], ["tests/a.pt", "fixtures/a.pt"]),
    ("tests/fixtures", ["tests/fixtures/a.pt"], ["tests/fixtures2/a.pt"]),
    ("*.tmp", ["a.tmp", "deep/dir/b.tmp"], ["a.tmp.pt"]),
    ("data/*.pkl", ["data/a.pkl"], ["data/sub/a.pkl", "other/data/a.pkl"]),
    ("**/cache/*.bin", ["cache/a.bin", "x/y/cache/a.bin"], ["x/cache/y/a.bin"]),
    ("build", ["build/m.pt", "src/build/m.pt"], ["builder/m.pt"]),
    ("/top.pt", ["top.pt"], ["sub/top.pt"]),
    ("model_[0-9].pt", ["model_1.pt"], ["model_a.pt"]),
])
def test_exclude_patterns(tmp_path: Path, pattern: str, excluded: List[str], kept: List[str]) -> None:
    cfg = Config(root=str(tmp_path), excludes=(pattern,))
    for rel in excluded:
        assert cfg.is_excluded(str(tmp_path / rel)), rel
    for rel in kept:
        assert not cfg.is_excluded(str(tmp_path / rel)), rel


def test_exclude_outside_the_config_tree(tmp_path: Path) -> None:
    cfg = Config(root=str(tmp_path / "repo"), excludes=("outside", "*.tmp", "sub/*.pt"))
    assert not cfg.is_excluded(str(tmp_path / "outside" / "m.pt"))  # a directory above the root
    assert cfg.is_excluded(str(tmp_path / "elsewhere" / "m.tmp"))
    assert not cfg.is_excluded(str(tmp_path / "sub" / "m.pt"))


def test_ignore_matching(tmp_path: Path) -> None:
    cfg = load_yaml(tmp_path, FULL)
    assert cfg.ignore_for(str(tmp_path / "anywhere" / "m.pt"), SHA) is cfg.ignores[0]
    assert cfg.ignore_for(str(tmp_path / "m.pt"), "00" * 32) is None
    assert cfg.ignore_for(str(tmp_path / "vendor" / "model.pt"), "cd" * 32) is cfg.ignores[1]
    assert cfg.ignore_for(str(tmp_path / "other" / "model.pt"), "cd" * 32) is None


def test_docs_example_is_a_valid_config(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    example = page.split("```yaml", 1)[1].split("```", 1)[0]
    cfg = load_yaml(tmp_path, example)
    assert cfg.allow_globals and cfg.ignores and cfg.excludes and cfg.severity_overrides


def test_schema_matches_the_parser(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == set(KEYS)
    limit_names = {name.replace("_", "-") for name in Limits.field_names()}
    assert set(schema["properties"]["limits"]["properties"]) <= limit_names
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(yaml.safe_load(FULL)))
    for bad in ("colour: red\n", "ignore:\n  - path: a.pt\n    reason: x\n",
                "allow-globals:\n  - global: a.b\n"):
        assert list(validator.iter_errors(yaml.safe_load(bad))), bad


# ---- CLI ----------------------------------------------------------------------------------------

def run_cli(args: List[str], capsys: pytest.CaptureFixture[str]) -> "tuple[int, str, str]":
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def junk(path: Path, data: bytes = b"not a model at all") -> Path:
    """A .bin file (an ambiguous name) whose content is no model: an INFO unrecognized-format finding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_cli_invalid_config_exits_3_with_the_location(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path / "bad.yaml", "fail-on: high\nseverity-overrides:\n  pickle-dangerous-global: low\n")
    model = junk(tmp_path / "m.bin")
    code, out, err = run_cli(["scan", "--config", str(cfg), str(model)], capsys)
    assert code == 3 and out == ""
    assert f"{cfg}:3: severity-overrides.pickle-dangerous-global:" in err and "cannot be lowered" in err


def test_cli_discovers_config_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path / ".safemodel.yaml", "severity-overrides:\n  unrecognized-format: medium\n"
                                        "fail-on: medium\n")
    junk(tmp_path / "m.bin")
    monkeypatch.chdir(tmp_path / ".git")  # any directory inside the repository
    code, out, _ = run_cli(["scan", "--no-cache", str(tmp_path / "m.bin")], capsys)
    assert code == 1 and "MEDIUM unrecognized-format" in out
    # --fail-on on the command line wins over the config.
    code, _, _ = run_cli(["scan", "--no-cache", "--fail-on", "high", str(tmp_path / "m.bin")], capsys)
    assert code == 0


def test_cli_exclude(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path / ".safemodel.yaml", "exclude:\n  - models/fixtures/**\n  - '*.tmp.bin'\n")
    models = tmp_path / "models"
    junk(models / "fixtures" / "a.bin")
    junk(models / "x.tmp.bin")
    junk(models / "kept.bin")
    code, out, _ = run_cli(["scan", "--config", str(cfg), "-f", "json", str(models),
                            str(models / "x.tmp.bin")], capsys)
    assert code == 0
    assert [f["path"] for f in json.loads(out)["files"]] == [str(models / "kept.bin")]


def test_cli_sha256_pinned_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = junk(tmp_path / "m.bin")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    base = "severity-overrides:\n  unrecognized-format: high\n"
    cfg = write(tmp_path / ".safemodel.yaml", base)
    args = ["scan", "--config", str(cfg), "-f", "json", str(model)]
    assert run_cli(args, capsys)[0] == 1

    write(cfg, base + f"ignore:\n  - sha256: {digest}\n    reason: reviewed by the ML team\n")
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    (finding,) = json.loads(out)["files"][0]["findings"]
    assert finding["rule_id"] == "ignored-by-config" and finding["severity"] == "INFO"
    assert "reviewed by the ML team" in finding["message"]
    assert finding["details"]["suppressed"] == {"unrecognized-format": 1}
    assert finding["details"]["entry"] == ".safemodel.yaml:4"

    # A changed file no longer matches its pin: scanned and reported again.
    junk(model, b"not a model at all, edited")
    assert run_cli(args, capsys)[0] == 1

    # A pin restricted to another path does not apply here.
    junk(model)
    write(cfg, base + f"ignore:\n  - sha256: {digest}\n    reason: x\n    path: other/m.bin\n")
    assert run_cli(args, capsys)[0] == 1
    write(cfg, base + f"ignore:\n  - sha256: {digest}\n    reason: x\n    path: ./m.bin\n")
    assert run_cli(args, capsys)[0] == 0


def test_cli_limits_reach_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path / ".safemodel.yaml", "limits:\n  max-depth: 2\n")
    args = cli.build_parser().parse_args(["scan", "--config", str(cfg), str(tmp_path)])
    run = settings.from_namespace(args)
    assert run.options.limits.max_depth == 2
    assert run.fail_on is Severity.HIGH
    monkeypatch.setenv("SAFEMODEL_NO_CACHE", "1")
    assert run.cache_dir is None
    monkeypatch.delenv("SAFEMODEL_NO_CACHE")
    assert run.cache_dir == os.environ["SAFEMODEL_CACHE_DIR"]


# ---- issue 17 item 5: hostile config files and where a config is looked for --------------------

EVIL_PICKLE = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."

#: Nine levels of ten aliases each: 10**9 values once expanded (the classic "billion laughs").
BILLION_LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)) + "exclude: *a9\n"


def _cli_in_child(tmp_path: Path, args: List[str], cwd: Path, env: "dict | None" = None):  # type: ignore[no-untyped-def]
    """Run the CLI in a child with 1 GiB of address space and a 60 s limit (old code took 3 GB,
    or crashed in the C YAML composer)."""
    import subprocess
    import sys

    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from safemodel_ci.cli import main; sys.exit(main(sys.argv[1:]))")
    try:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=60, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail("the config was still being read after 60 s")


@pytest.mark.parametrize("text,expected", [
    (BILLION_LAUGHS, "alias"),
    # PyYAML 6.0.4 has a nesting limit of its own that may refuse first; either refusal is bounded.
    ("exclude: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper|maximum nesting depth"),
    ("fail-on: high\n" + "# padding\n" * 200_000, "larger than"),
], ids=["billion-laughs", "deep-nesting", "oversized"])
def test_hostile_yaml_is_refused_with_bounded_work(text: str, expected: str, tmp_path: Path) -> None:
    cfg = write(tmp_path / ".safemodel.yaml", text)
    model = tmp_path / "m.pkl"
    model.write_bytes(EVIL_PICKLE)
    args = ["scan", "--no-cache", "-j", "1", "--config", str(cfg), str(model)]
    proc = _cli_in_child(tmp_path, args, tmp_path)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-500:])
    assert "invalid config" in proc.stderr and re.search(expected, proc.stderr), proc.stderr[-500:]


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    cfg = load_yaml(tmp_path, "exclude: &ex ['*.tmp']\nlimits: {max-depth: 5}\n")
    assert cfg.excludes == ("*.tmp",)


def test_outside_a_repository_the_lookup_stays_below_home(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A config planted above the working directory outside home (/tmp) must not apply."""
    home = tmp_path / "home"
    planted = tmp_path / "shared"  # e.g. /tmp: anyone can write a config there
    work = planted / "job"
    work.mkdir(parents=True)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    write(planted / ".safemodel.yaml", 'exclude: ["**"]\n')
    assert find_config(str(work)) is None
    model = work / "evil.pkl"
    model.write_bytes(EVIL_PICKLE)
    monkeypatch.chdir(work)
    assert cli.main(["scan", "--no-cache", "-j", "1", "--quiet", "evil.pkl"]) == 1  # scanned, not excluded
    # The working directory itself always counts.
    write(work / ".safemodel.yaml", "fail-on: critical\n")
    assert find_config(str(work)) == str(work / ".safemodel.yaml")
    # Below home, the walk goes up through the working directory's tree, but not into home itself.
    project = home / "project"
    sub = project / "models"
    sub.mkdir(parents=True)
    write(home / ".safemodel.yaml", 'exclude: ["**"]\n')
    assert find_config(str(sub)) is None
    write(project / ".safemodel.yaml", "fail-on: critical\n")
    assert find_config(str(sub)) == str(project / ".safemodel.yaml")

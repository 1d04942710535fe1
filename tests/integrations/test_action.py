"""The composite action, run step by step from ``action.yml`` the way the Actions runner would.

What is real: ``action.yml`` parsed with pyyaml; every ``run:`` script executed with
``bash --noprofile --norc -eo pipefail`` (the runner's ``shell: bash``) in a real two-commit git
repository; ``env:`` values with their ``${{ ... }}`` expressions evaluated against the inputs
(defaults from ``action.yml``) and earlier steps' outputs, exactly and only where the runner
evaluates them; a fresh ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` file per step, parsed back
into step outputs and the action's ``outputs:``; a real pull_request / push event payload at
``GITHUB_EVENT_PATH``; ``GITHUB_ACTION_PATH`` = this repository.

What is simulated: ``actions/setup-python`` (a JavaScript action) is not run; its ``python-path``
output is the interpreter running the tests. The install step (``python -m venv`` + ``pip install
$GITHUB_ACTION_PATH``) would need the package index for the dependencies: the step tests stand its
venv in with ``$RUNNER_TEMP/safemodel-venv/bin/python``, a script running the test interpreter (which has
safemodel-ci and its dependencies installed), and ``test_install_step_builds_an_isolated_venv`` runs
the install step itself (dependencies from the machine's package index, or its local mirror) on a copy
of the action, then the scan from that venv.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytest
import yaml

from workflow_commands import process

git = pytest.importorskip("git")
jsonschema = pytest.importorskip("jsonschema")

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
CRAFTED = "e%0Avil%25\n::warning::x\r::error file=a.py::pwned\n##[add-mask]secret,b:c.pkl"
LOCAL_INDEX = Path("/opt/pypi/simple")
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ef" * 32 + b"\nsize 4096\n")


class Payload:
    """Pickling this writes a ``os.system`` call; only ever dumped, never loaded."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo x",))


EVIL = pickle.dumps(Payload(), protocol=2)
BENIGN = pickle.dumps({"weights": [0.5, 1.5], "epoch": 3}, protocol=4)


# ---- a small model of the runner ----------------------------------------------------------------

def load_action(action_path: Path = REPO_ROOT) -> Dict[str, Any]:
    with open(action_path / "action.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def evaluate(expression: str, context: Mapping[str, Any]) -> str:
    """A ``${{ }}`` expression: only property paths (``inputs.x``, ``steps.id.outputs.y``) are used."""
    assert re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", expression), expression
    value: Any = context
    for part in expression.split("."):
        value = value.get(part, "") if isinstance(value, Mapping) else ""
    return "" if value is None else str(value)


def substitute(text: str, context: Mapping[str, Any]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), context), text)


def read_output_file(path: Path) -> Dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks, as the runner reads them."""
    outputs: Dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").split("\n") if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[name] = "\n".join(lines[i + 1:end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
        i += 1
    return outputs


@dataclass
class ActionRun:
    returncode: int
    stdout: str
    stderr: str
    outputs: Dict[str, str]
    summary: str
    workspace: Path
    steps: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def commands(self):  # type: ignore[no-untyped-def]
        return process(self.stdout)

    @property
    def annotations(self):  # type: ignore[no-untyped-def]
        return [c for c in self.commands if c.name in ("error", "warning", "notice")]


def run_action(workspace: Path, inputs: Mapping[str, str], event_name: str, event: Mapping[str, Any],
               tmp: Path, *, action_path: Path = REPO_ROOT, run_install: bool = False,
               extra_env: Optional[Mapping[str, str]] = None) -> ActionRun:
    action = load_action(action_path)
    tmp.mkdir(parents=True, exist_ok=True)
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    event_path = tmp / "event.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    with git.Repo(workspace) as repo:
        head = repo.head.commit.hexsha
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
           or k.startswith(("HF_", "SAFEMODEL_CACHE"))}
    env.update({
        "CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux", "RUNNER_TEMP": str(runner_temp),
        "GITHUB_WORKSPACE": str(workspace), "GITHUB_ACTION_PATH": str(action_path),
        "GITHUB_EVENT_NAME": event_name, "GITHUB_EVENT_PATH": str(event_path), "GITHUB_SHA": head,
        "GITHUB_REPOSITORY": "acme/models",
    })
    env.update(extra_env or {})
    context: Dict[str, Any] = {
        "inputs": {name: str(inputs.get(name, spec.get("default", "")))
                   for name, spec in action["inputs"].items()},
        "steps": {},
    }
    unknown = set(inputs) - set(action["inputs"])
    assert not unknown, f"not inputs of the action: {unknown}"
    stdout, stderr, summary = [], [], []
    returncode = 0
    assert action["runs"]["using"] == "composite"
    for index, step in enumerate(action["runs"]["steps"]):
        step_id = step.get("id", f"__{index}")
        if "uses" in step:
            # Simulated: actions/setup-python gives its interpreter as python-path.
            assert step["uses"].startswith("actions/setup-python@")
            assert step["with"]["update-environment"] is False
            context["steps"][step_id] = {"outputs": {"python-path": sys.executable}}
            continue
        if "pip install" in step["run"] and not run_install:
            fake_action_venv(runner_temp)
            continue
        step_env = dict(env)
        step_env.update({k: substitute(str(v), context) for k, v in (step.get("env") or {}).items()})
        output_file = tmp / f"output-{index}"
        summary_file = tmp / f"summary-{index}"
        output_file.touch()
        summary_file.touch()
        step_env["GITHUB_OUTPUT"] = str(output_file)
        step_env["GITHUB_STEP_SUMMARY"] = str(summary_file)
        script = tmp / f"step-{index}.sh"
        script.write_text(step["run"], encoding="utf-8")
        assert step["shell"] == "bash"
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                              cwd=workspace, env=step_env, capture_output=True, timeout=600)
        stdout.append(proc.stdout.decode("utf-8", "surrogateescape"))
        stderr.append(proc.stderr.decode("utf-8", "surrogateescape"))
        summary.append(summary_file.read_text(encoding="utf-8"))
        context["steps"][step_id] = {"outputs": read_output_file(output_file)}
        if proc.returncode != 0:
            returncode = proc.returncode
            break
    outputs = {name: substitute(spec["value"], context) for name, spec in action["outputs"].items()}
    return ActionRun(returncode, "".join(stdout), "".join(stderr), outputs, "".join(summary), workspace,
                     context["steps"])


def fake_action_venv(runner_temp: Path) -> Path:
    """``$RUNNER_TEMP/safemodel-venv/bin/python`` standing in for the install step: runs the test interpreter.

    A script that execs it, not a symlink to it: a venv's interpreter finds its ``pyvenv.cfg`` (and so
    its site-packages) beside the path it was started by, which for a symlink would be this folder;
    it would then run as the base interpreter, without safemodel-ci or with another copy of it.
    """
    venv_bin = runner_temp / "safemodel-venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    wrapper = venv_bin / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_faked_action_venv_runs_this_safemodel_ci_with_its_dependencies(tmp_path: Path) -> None:
    """Run from a fresh venv (the README's test command), the stand-in must see that venv's packages."""
    import safemodel_ci

    python = fake_action_venv(tmp_path)
    probe = subprocess.run([str(python), "-c", "import sys, yaml, safemodel_ci; "
                            "print(sys.prefix); print(safemodel_ci.__file__)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    prefix, location = probe.stdout.split("\n")[:2]
    assert prefix == sys.prefix and location == safemodel_ci.__file__


# ---- a repository with a base and a head commit ---------------------------------------------------

@dataclass
class TwoCommits:
    path: Path
    base: str
    head: str

    def pull_request(self) -> Dict[str, Any]:
        """The shape of a real ``pull_request`` event payload (the fields the action and runner use)."""
        return {
            "action": "synchronize", "number": 7,
            "pull_request": {
                "number": 7, "state": "open",
                "base": {"ref": "main", "sha": self.base, "repo": {"full_name": "acme/models"}},
                "head": {"ref": "add-models", "sha": self.head, "repo": {"full_name": "acme/models"}},
            },
            "repository": {"full_name": "acme/models", "default_branch": "main"},
            "sender": {"login": "octocat"},
        }

    def push(self, before: Optional[str] = None) -> Dict[str, Any]:
        return {"ref": "refs/heads/main", "before": before or self.base, "after": self.head,
                "repository": {"full_name": "acme/models"}, "created": False, "forced": False}


def make_repo(path: Path, base_files: Mapping[str, bytes], head_files: Mapping[str, bytes],
              removed: tuple = ()) -> TwoCommits:
    path.mkdir()
    with git.Repo.init(path, initial_branch="main") as repo:
        with repo.config_writer() as cfg:
            cfg.set_value("user", "name", "Test").set_value("user", "email", "test@example.com")
        for name, data in base_files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        repo.git.add("-A")
        repo.git.commit("-m", "base")
        base = repo.head.commit.hexsha
        for name, data in head_files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        for name in removed:
            (path / name).unlink()
        repo.git.add("-A")
        repo.git.commit("--allow-empty", "-m", "head")
        return TwoCommits(path, base, repo.head.commit.hexsha)


@pytest.fixture()
def models_repo(tmp_path: Path) -> TwoCommits:
    """Base: an old malicious pickle and a benign one. Head: a new malicious pickle, a new benign one."""
    return make_repo(
        tmp_path / "ws",
        base_files={"README.md": b"models\n", "legacy/old_evil.pkl": EVIL, "legacy/old_weights.pkl": BENIGN},
        head_files={"README.md": b"models v2\n", "models/new_evil.pkl": EVIL, "models/weights.pkl": BENIGN},
        removed=("legacy/old_weights.pkl",),
    )


def sarif_uris(path: Path) -> Dict[str, set]:
    log = json.loads(path.read_text(encoding="utf-8"))
    out: Dict[str, set] = {}
    for r in log["runs"][0]["results"]:
        uri = r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        out.setdefault(uri, set()).add(r["ruleId"])
    return out


def validate_sarif(path: Path, schema_path: Path) -> None:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    log = json.loads(path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(log))
    assert not errors, errors[0].message


# ---- action.yml itself -----------------------------------------------------------------------------

def test_action_yml_is_a_composite_action_with_inputs_only_in_env() -> None:
    action = load_action()
    assert action["runs"]["using"] == "composite"
    for name, spec in action["inputs"].items():
        assert spec.get("required") is False and spec.get("description"), name
    for name, spec in action["outputs"].items():
        assert re.fullmatch(r"\$\{\{ steps\.scan\.outputs\.[\w-]+ \}\}", spec["value"]), name
        assert spec.get("description")
    steps = action["runs"]["steps"]
    assert sum(1 for s in steps if "uses" in s) == 1
    for step in steps:  # a tag can be moved to other code; a commit sha cannot
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    for step in steps:
        if "run" in step:
            assert step["shell"] == "bash"
            # Script injection: no expression is ever expanded into a script's text.
            assert "${{" not in step["run"], step["name"]
    scan = next(s for s in steps if s.get("id") == "scan")
    used = {m.group(1) for v in scan["env"].values() for m in EXPRESSION.finditer(v)}
    assert used == {f"inputs.{name}" for name in action["inputs"]}


# ---- pull requests and pushes ------------------------------------------------------------------------

def test_pull_request_changed_only_scans_only_the_changed_files(models_repo: TwoCommits, tmp_path: Path,
                                                                sarif_schema_path: Path) -> None:
    run = run_action(models_repo.path, {"changed-only": "true"}, "pull_request",
                     models_repo.pull_request(), tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    files = {a.properties.get("file") for a in run.annotations}
    assert files == {"models/new_evil.pkl"}
    [annotation] = run.annotations
    assert annotation.name == "error" and "pickle-dangerous-global" in annotation.properties["title"]
    assert "old_evil" not in run.stdout and "old_evil" not in run.summary
    # Job summary: verdict, the table row, what to do.
    assert "FAIL" in run.summary and "`pickle-dangerous-global`" in run.summary
    assert "models\\/new\\_evil\\.pkl" in run.summary and "What to do" in run.summary
    # Outputs, through the action's outputs: mapping.
    assert run.outputs["blocking"] == "true"
    assert int(run.outputs["findings"]) >= 1
    assert run.outputs["sarif-file"] == "safemodel.sarif"
    sarif = models_repo.path / "safemodel.sarif"
    validate_sarif(sarif, sarif_schema_path)
    uris = sarif_uris(sarif)
    assert set(uris) == {"models/new_evil.pkl"} and "pickle-dangerous-global" in uris["models/new_evil.pkl"]


def test_full_scan_on_push_reports_old_and_new_files(models_repo: TwoCommits, tmp_path: Path,
                                                     sarif_schema_path: Path) -> None:
    run = run_action(models_repo.path, {"sarif-file": "reports/out.sarif"}, "push", models_repo.push(),
                     tmp_path)
    assert run.returncode == 1
    files = {a.properties.get("file") for a in run.annotations if a.name == "error"}
    assert files == {"models/new_evil.pkl", "legacy/old_evil.pkl"}
    assert run.outputs["sarif-file"] == "reports/out.sarif"
    validate_sarif(models_repo.path / "reports" / "out.sarif", sarif_schema_path)
    uris = sarif_uris(models_repo.path / "reports" / "out.sarif")
    assert {"models/new_evil.pkl", "legacy/old_evil.pkl"} <= set(uris)


def test_push_changed_only_uses_before(models_repo: TwoCommits, tmp_path: Path) -> None:
    run = run_action(models_repo.path, {"changed-only": "true"}, "push", models_repo.push(), tmp_path)
    assert run.returncode == 1
    assert {a.properties.get("file") for a in run.annotations} == {"models/new_evil.pkl"}


def test_clean_pull_request_passes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"legacy/old_evil.pkl": EVIL}, {"models/weights.pkl": BENIGN})
    run = run_action(repo.path, {"changed-only": "true", "sarif-file": ""}, "pull_request",
                     repo.pull_request(), tmp_path)
    assert run.returncode == 0, run.stdout
    assert run.annotations == []
    assert run.outputs == {"findings": "0", "blocking": "false", "sarif-file": ""}
    assert "PASS" in run.summary and "No findings." in run.summary
    assert not (repo.path / "safemodel.sarif").exists()


def test_base_missing_from_a_shallow_clone_falls_back_to_a_full_scan(models_repo: TwoCommits,
                                                                      tmp_path: Path) -> None:
    run = run_action(models_repo.path, {"changed-only": "true"}, "push",
                     models_repo.push(before="1" * 40), tmp_path)
    assert run.returncode == 1
    warnings = [a for a in run.annotations if a.name == "warning"]
    assert warnings and "fetch-depth: 0" in warnings[0].data
    assert {a.properties.get("file") for a in run.annotations if a.name == "error"} == \
        {"models/new_evil.pkl", "legacy/old_evil.pkl"}


def test_schedule_event_scans_everything(models_repo: TwoCommits, tmp_path: Path) -> None:
    run = run_action(models_repo.path, {"changed-only": "true", "paths": "legacy\n"}, "schedule",
                     {"schedule": "0 3 * * 1"}, tmp_path)
    assert run.returncode == 1
    assert [a.name for a in run.annotations] == ["notice", "error"]
    assert run.annotations[1].properties["file"] == "legacy/old_evil.pkl"


def test_inputs_switch_outputs_off_and_fail_on_is_passed(models_repo: TwoCommits, tmp_path: Path) -> None:
    unknown = pickle.dumps(ipaddress.ip_address("10.0.0.1"))  # a global that is not allowlisted
    (models_repo.path / "models" / "weights.pkl").write_bytes(unknown)
    run = run_action(models_repo.path, {"paths": "models/weights.pkl", "annotations": "false",
                                        "summary": "false", "fail-on": "critical"},
                     "push", models_repo.push(), tmp_path)
    # ipaddress.IPv4Address is not allowlisted (HIGH); with fail-on critical it does not fail the step.
    assert run.returncode == 0, run.stdout
    assert run.annotations == [] and run.summary == ""
    assert run.outputs["blocking"] == "false" and int(run.outputs["findings"]) >= 1
    assert "pickle-unknown-global" in run.stdout  # the text report is still in the log


def test_bad_input_is_a_usage_error(models_repo: TwoCommits, tmp_path: Path) -> None:
    run = run_action(models_repo.path, {"fail-on": "sometimes"}, "push", models_repo.push(), tmp_path)
    assert run.returncode == 3
    assert [a.name for a in run.annotations] == ["error"] and "fail-on" in run.annotations[0].data
    assert run.outputs == {"findings": "0", "blocking": "true", "sarif-file": ""}
    assert "did not run" in run.summary


def test_an_internal_error_fails_the_step_and_says_so(models_repo: TwoCommits, tmp_path: Path) -> None:
    # The SARIF file cannot be written below a regular file: the adapter fails, it never passes.
    run = run_action(models_repo.path, {"sarif-file": "README.md/out.sarif"}, "push", models_repo.push(),
                     tmp_path)
    assert run.returncode == 3
    assert any(a.properties.get("title") == "safemodel: internal error" for a in run.annotations)
    assert "Traceback" in run.stdout and run.outputs["blocking"] == "true"


# ---- hostile names and LFS ---------------------------------------------------------------------------

def test_crafted_file_name_cannot_add_a_workflow_command(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {CRAFTED: EVIL})
    run = run_action(repo.path, {"changed-only": "true"}, "pull_request", repo.pull_request(), tmp_path)
    assert run.returncode == 1
    commands = run.commands
    expected = {"group", "endgroup", "stop-commands", "error"}
    tokens = {c.data for c in commands if c.name == "stop-commands"}
    assert {c.name for c in commands} <= expected | tokens
    assert [c.name for c in commands if c.name not in {"group", "endgroup", "stop-commands"} | tokens] \
        == ["error"]
    assert run.annotations[0].properties["file"] == CRAFTED
    # Every line that reaches the runner as "::..." is one the action meant to write.
    for line in re.split(r"\r\n|\r|\n", run.stdout + run.stderr):
        if line.lstrip().startswith("::"):
            assert re.match(r"::(group|endgroup|stop-commands|[0-9a-f]{32}|error|warning|notice)[ :]",
                            line), line
    # The text report in the log does show the raw name (with its "##[add-mask]"), but only inside
    # the stop-commands block, where the runner acts on nothing but the resume token.
    assert "##[add-mask]" in run.stdout


def test_lfs_pointers_in_the_checkout_fail_with_the_lfs_advice(tmp_path: Path) -> None:
    if shutil.which("git-lfs") is not None:
        # An upstream repo tracks the model with LFS; the workspace is cloned without the LFS content,
        # which is what actions/checkout does unless lfs: true.
        upstream = make_repo(tmp_path / "upstream", {".gitattributes": b"*.safetensors filter=lfs diff=lfs "
                                                                       b"merge=lfs -text\n"}, {})
        for command in (["git", "lfs", "install", "--local"], ["git", "add", "model.safetensors"],
                        ["git", "commit", "-qm", "model"]):
            if command[1] == "add":
                (upstream.path / "model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}      " * 100)
            subprocess.run(command, cwd=upstream.path, check=True, capture_output=True)
        workspace = tmp_path / "ws"
        subprocess.run(["git", "clone", "-q", str(upstream.path), str(workspace)], check=True,
                       capture_output=True, env={**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"})
        base = upstream.base
    else:  # without git-lfs: the pointer text as the checkout would hold it
        made = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {"model.safetensors": LFS_POINTER})
        workspace, base = made.path, made.base
    assert (workspace / "model.safetensors").read_bytes().startswith(b"version https://git-lfs")
    with git.Repo(workspace) as repo:
        head = repo.head.commit.hexsha
    run = run_action(workspace, {}, "push", {"before": base, "after": head}, tmp_path)
    assert run.returncode == 2
    errors = [a for a in run.annotations if a.name == "error"]
    assert any("lfs: true" in a.properties.get("title", "") for a in errors)
    assert any(a.properties.get("file") == "model.safetensors" for a in errors)
    assert "Git LFS content missing" in run.summary and "`lfs: true`" in run.summary
    assert run.outputs["blocking"] == "true"


# ---- the Hub ---------------------------------------------------------------------------------------

def test_hub_repos_are_scanned_through_safemodel_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    sarif_schema_path: Path) -> None:
    from hub_server import fake_hub_env

    hub_gen = fake_hub_env(tmp_path, monkeypatch)
    hub = next(hub_gen)
    try:
        endpoint = hub.endpoint
        sha = hub.add_commit("acme/evil", {"model.pkl": EVIL, "config.json": b"{}"})
        repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {"notes.txt": b"y\n"})
        run = run_action(repo.path, {"hub-repos": "acme/evil, acme/gone"}, "schedule", {}, tmp_path)
    finally:
        next(hub_gen, None)
    assert run.returncode == 1, run.stdout + run.stderr
    errors = [a for a in run.annotations if a.name == "error"]
    assert any(f"acme/evil@{sha}:model.pkl" in a.data and "file" not in a.properties for a in errors)
    assert any("acme/gone" in a.data for a in errors)  # a repo that cannot be listed is not silent
    validate_sarif(repo.path / "safemodel.sarif", sarif_schema_path)
    uris = sarif_uris(repo.path / "safemodel.sarif")
    assert f"{endpoint}/acme/evil/blob/{sha}/model.pkl" in uris


# ---- the install step, for real (offline) --------------------------------------------------------

@pytest.mark.slow
def test_install_step_builds_an_isolated_venv_and_the_action_runs_from_it(tmp_path: Path) -> None:
    """Every step but setup-python for real: venv, ``pip install $GITHUB_ACTION_PATH``, the scan."""
    action_copy = tmp_path / "action-checkout"  # what the runner downloads for uses: owner/repo@ref
    shutil.copytree(REPO_ROOT, action_copy, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".*cache", ".hypothesis", ".benchmarks", "tests",
        "bench", "fuzz"))
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {"models/evil.pkl": EVIL})
    extra: Dict[str, str] = {}
    if LOCAL_INDEX.is_dir():  # this machine's offline mirror of PyPI; elsewhere pip's own config
        extra["PIP_INDEX_URL"] = LOCAL_INDEX.as_uri()
    run = run_action(repo.path, {"changed-only": "true"}, "pull_request", repo.pull_request(), tmp_path,
                     action_path=action_copy, run_install=True, extra_env=extra)
    venv = tmp_path / "runner-temp" / "safemodel-venv"
    if not (venv / "bin" / "safemodel").exists():
        if not LOCAL_INDEX.is_dir():
            pytest.skip(f"no package index reachable to install the dependencies: {run.stderr[-300:]}")
        pytest.fail(run.stderr)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import safemodel_ci, sys; "
                            "print(safemodel_ci.__file__, sys.prefix != sys.base_prefix)"],
                           capture_output=True, text=True, cwd=tmp_path)
    location, in_venv = probe.stdout.split()
    assert in_venv == "True" and location.startswith(str(venv))
    # Isolated: what the job installs in its own Python is not visible to the action's venv.
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"],
                          capture_output=True, cwd=tmp_path).returncode != 0
    assert run.returncode == 1, run.stdout + run.stderr
    assert [(a.name, a.properties.get("file")) for a in run.annotations] == [("error", "models/evil.pkl")]
    assert run.outputs["blocking"] == "true"


def test_docs_workflow_uses_the_actions_real_inputs_and_outputs() -> None:
    page = (REPO_ROOT / "docs" / "github-action.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", page, re.S)
    assert block is not None
    workflow = yaml.safe_load(block.group(1))
    assert set(workflow[True]) == {"pull_request", "push", "schedule"}  # YAML 1.1 reads "on" as True
    job = workflow["jobs"]["safemodel"]
    assert job["permissions"] == {"contents": "read", "security-events": "write"}
    checkout, scan, upload = job["steps"]
    assert checkout["with"] == {"fetch-depth": 0, "lfs": True}
    assert set(scan["with"]) <= set(load_action()["inputs"])
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert upload["if"].startswith("always()")
    used = set(re.findall(r"steps\.safemodel\.outputs\.([\w-]+)", block.group(1)))
    assert used and used <= set(load_action()["outputs"])


def test_config_input_is_passed_to_the_scan(models_repo: TwoCommits, tmp_path: Path) -> None:
    unknown = pickle.dumps(ipaddress.ip_address("10.0.0.1"))  # pickle-unknown-global, HIGH
    (models_repo.path / "models" / "weights.pkl").write_bytes(unknown)
    (models_repo.path / "ci").mkdir()
    (models_repo.path / "ci" / "safemodel.yaml").write_text("fail-on: critical\n", encoding="utf-8")
    inputs = {"paths": "models/weights.pkl"}
    without = run_action(models_repo.path, inputs, "push", models_repo.push(), tmp_path / "a")
    assert without.returncode == 1
    with_config = run_action(models_repo.path, {**inputs, "config": "ci/safemodel.yaml"}, "push",
                             models_repo.push(), tmp_path / "b")
    assert with_config.returncode == 0, with_config.stdout
    assert [a.name for a in with_config.annotations] == ["warning"]  # HIGH below fail-on critical
    assert "fail-on `critical`" in with_config.summary
    missing = run_action(models_repo.path, {**inputs, "config": "ci/nope.yaml"}, "push",
                         models_repo.push(), tmp_path / "c")
    assert missing.returncode == 3 and "config" in missing.annotations[0].data


def test_changed_only_scans_renamed_files_and_a_new_branch_push_scans_all(tmp_path: Path) -> None:
    base = {"README.md": b"x\n", "staging/evil.pkl": EVIL}
    repo = make_repo(tmp_path / "ws", base, {"models/evil.pkl": EVIL}, removed=("staging/evil.pkl",))
    with git.Repo(repo.path) as r:  # git itself sees the move as a rename
        assert "R100" in r.git.diff("--name-status", "-M", f"{repo.base}...HEAD")
    renamed = run_action(repo.path, {"changed-only": "true"}, "pull_request", repo.pull_request(),
                         tmp_path / "a")
    assert renamed.returncode == 1
    assert [a.properties.get("file") for a in renamed.annotations] == ["models/evil.pkl"]
    new_branch = run_action(repo.path, {"changed-only": "true"}, "push", repo.push(before="0" * 40),
                            tmp_path / "b")
    assert new_branch.returncode == 1
    assert [a.name for a in new_branch.annotations] == ["notice", "error"]


# ---- issue 17 item 1: a pull request cannot change the config its own scan obeys -----------------

def _evil_sha() -> str:
    import hashlib

    return hashlib.sha256(EVIL).hexdigest()


@pytest.mark.parametrize("head_config", [
    'exclude: ["**"]\n',
    "allow-globals:\n  - global: posix.system\n    reason: trust me\n",
    "ignore:\n  - sha256: {sha}\n    reason: reviewed, honest\n",
], ids=["exclude-all", "allow-posix-system", "ignore-the-payload"])
def test_pull_request_config_change_does_not_turn_its_scan_green(head_config: str, tmp_path: Path,
                                                                  sarif_schema_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"},
                     {"models/evil.pkl": EVIL,
                      ".safemodel.yaml": head_config.format(sha=_evil_sha()).encode()})
    run = run_action(repo.path, {}, "pull_request", repo.pull_request(), tmp_path / "run")
    assert run.returncode == 1, run.stdout
    assert "models/evil.pkl" in {a.properties.get("file") for a in run.annotations if a.name == "error"}
    warning = [a for a in run.annotations
               if a.name == "warning" and "config" in a.properties.get("title", "")]
    assert warning and "base branch" in warning[0].data
    assert warning[0].properties.get("file") == ".safemodel.yaml"
    assert "**Config:**" in run.summary and "base branch" in run.summary
    sarif = json.loads((repo.path / "safemodel.sarif").read_text(encoding="utf-8"))
    invocation = sarif["runs"][0]["invocations"][0]
    notes = [n["message"]["text"] for n in invocation.get("toolExecutionNotifications", [])]
    assert any("base branch" in n for n in notes)
    validate_sarif(repo.path / "safemodel.sarif", sarif_schema_path)
    # The same change on a push to the branch (not a pull request) is the repository's own config.
    pushed = run_action(repo.path, {}, "push", repo.push(), tmp_path / "push")
    assert pushed.returncode == 0, pushed.stdout


def test_base_config_applies_and_its_exclusions_are_listed(tmp_path: Path, sarif_schema_path: Path) -> None:
    """The base excludes legacy/**; the pull request deletes the config and the exclusion still holds
    (a deletion takes effect once merged), and every excluded file is listed."""
    base = {"legacy/old_evil.pkl": EVIL, ".safemodel.yaml": b'exclude: ["legacy/**"]\n'}
    repo = make_repo(tmp_path / "ws", base,
                     {"models/new_evil.pkl": EVIL}, removed=(".safemodel.yaml",))
    run = run_action(repo.path, {}, "pull_request", repo.pull_request(), tmp_path / "run")
    assert run.returncode == 1
    assert {a.properties.get("file") for a in run.annotations if a.name == "error"} == {"models/new_evil.pkl"}
    assert "removes the config" in run.stdout
    assert "Excluded by the config (1 file" in run.summary and "legacy\\/old\\_evil\\.pkl" in run.summary
    sarif = json.loads((repo.path / "safemodel.sarif").read_text(encoding="utf-8"))
    excluded = sarif["runs"][0]["properties"]["excludedByConfig"]
    assert [e["pattern"] for e in excluded] == ["legacy/**"] and excluded[0]["path"].endswith("old_evil.pkl")
    validate_sarif(repo.path / "safemodel.sarif", sarif_schema_path)


def test_config_from_head_is_for_same_repository_pull_requests_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"},
                     {"models/evil.pkl": EVIL, ".safemodel.yaml": b'exclude: ["models/**"]\n'})
    same = run_action(repo.path, {"config-from-head": "true"}, "pull_request", repo.pull_request(),
                      tmp_path / "same")
    assert same.returncode == 0, same.stdout  # opted in: the head config, and the log says so
    assert "its own config was used" in same.stdout
    fork = repo.pull_request()
    fork["pull_request"]["head"]["repo"] = {"full_name": "mallory/models"}
    forked = run_action(repo.path, {"config-from-head": "true"}, "pull_request_target", fork,
                        tmp_path / "fork")
    assert forked.returncode == 1, forked.stdout
    assert "fork" in forked.summary


# ---- issue 17 item 7: names and shas from outside -------------------------------------------------

def test_non_utf8_file_name_is_reported_not_a_crash(tmp_path: Path, sarif_schema_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {"README.md": b"y\n"})
    with open(os.path.join(os.fsencode(repo.path), b"models-\xff.pkl"), "wb") as fh:
        fh.write(EVIL)
    run = run_action(repo.path, {}, "push", repo.push(), tmp_path / "run", extra_env={"LANG": "C.UTF-8"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "crashed" not in run.stdout
    assert "models\\-\\\\xff\\.pkl" in run.summary  # \xff, Markdown-escaped
    sarif_path = repo.path / "safemodel.sarif"
    validate_sarif(sarif_path, sarif_schema_path)
    assert "models-%FF.pkl" in sarif_uris(sarif_path)


@pytest.mark.parametrize("bad", ["--output=pwned.txt", "HEAD~1", "abc", "A" * 40])
def test_changed_only_refuses_a_base_that_is_not_a_commit_id(bad: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "ws", {"README.md": b"x\n"}, {"models/evil.pkl": EVIL})
    run = run_action(repo.path, {"changed-only": "true"}, "push", repo.push(before=bad), tmp_path / "run")
    assert run.returncode == 3, run.stdout
    assert "not a commit id" in run.stdout
    assert not (repo.path / "pwned.txt").exists()

"""Exit-code audit: every entry point maps each outcome to the documented code.

0 clean, 1 blocking findings, 2 could not scan fully (never clean), 3 usage or configuration error
(``safemodel_ci.findings``: ``EXIT_OK`` .. ``EXIT_USAGE``). The entry points are the command line
(``safemodel scan``, ``hub``, ``cache``, ``rules``), the pre-commit hook
(``safemodel_ci.hooks.pre_commit.main``) and the GitHub Action adapter (``action/run.py``'s
``main``, called with the environment ``action.yml`` gives it). One table row per case and entry
point; the Hub cases use the local test server in ``tests/hub_server.py``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from safemodel_ci.cli import main as cli_main
from safemodel_ci.context import Limits
from safemodel_ci.findings import EXIT_FINDINGS, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from safemodel_ci.hooks.pre_commit import main as hook_main

from conftest import REPO_ROOT

EVIL = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
CLEAN = pickle.dumps({"weights": [0.5, 1.5], "epoch": 3}, protocol=4)
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 4096\n")


class _ZipCrypto:
    """Traditional PKWARE encryption (APPNOTE 6.1), which zipfile can decrypt but not write."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for c in password:
            self._update(c)

    @staticmethod
    def _crc(value: int, c: int) -> int:  # one raw CRC-32 step (zlib.crc32 inverts before and after)
        return ~zlib.crc32(bytes([c]), ~value & 0xFFFFFFFF) & 0xFFFFFFFF

    def _update(self, c: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, c)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for c in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(c ^ ((temp * (temp ^ 1)) >> 8) & 0xFF)
            self._update(c)
        return bytes(out)


def _encrypted_zip(password: bytes = b"secret") -> bytes:
    """A zip whose one member (a pickle) is really encrypted; zipfile reads it back with the password."""
    crc = zlib.crc32(CLEAN)
    header = bytes(range(11)) + bytes([crc >> 24])  # 11 filler bytes + the CRC's high byte (check byte)
    data = _ZipCrypto(password).encrypt(header + CLEAN)
    name = b"archive/data.pkl"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 1, 0, 0, 0x21, crc, len(data), len(CLEAN),
                        len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 1, 0, 0, 0x21, crc, len(data),
                          len(CLEAN), len(name), 0, 0, 0, 0, 0o644 << 16, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    blob = local + data + central + end
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:  # the real reader agrees it is this pickle, encrypted
        assert zf.read("archive/data.pkl", pwd=password) == CLEAN
    return blob


def _nested_zips(levels: int) -> bytes:
    data = CLEAN
    for i in range(levels):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{i}.zip" if i else "data.pkl", data)
        data = buf.getvalue()
    return data


def _make_files(root: Path) -> None:
    """Every file case, under ``root`` (the workspace of the action runs)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "clean.pkl").write_bytes(CLEAN)
    (root / "evil.pkl").write_bytes(EVIL)
    (root / "truncated.pkl").write_bytes(CLEAN[:-7])
    (root / "encrypted.zip").write_bytes(_encrypted_zip())
    (root / "weights.bin").write_bytes(LFS_POINTER)  # no git repository, so no object to scan
    (root / "deep.zip").write_bytes(_nested_zips(Limits().max_depth + 3))
    (root / "dangling.pkl").symlink_to(root / "no-such-target.pkl")
    os.mkfifo(root / "pipe.pkl")
    (root / "bad.yaml").write_text("limits:\n  max-depth: -1\n")
    (root / "good.yaml").write_text("fail-on: high\n")


#: (case id, files scanned, extra options (CLI/hook), config file, expected code per entry point).
#: Entry points: "cli" (safemodel scan), "hook" (pre-commit), "action" (action/run.py).
FILE_CASES: List[Tuple[str, List[str], List[str], Optional[str], Dict[str, int]]] = [
    ("clean", ["clean.pkl"], [], None, {"cli": EXIT_OK, "hook": EXIT_OK, "action": EXIT_OK}),
    ("findings", ["evil.pkl", "clean.pkl"], [], None,
     {"cli": EXIT_FINDINGS, "hook": EXIT_FINDINGS, "action": EXIT_FINDINGS}),
    ("findings beat incomplete", ["evil.pkl", "truncated.pkl"], [], None,
     {"cli": EXIT_FINDINGS, "hook": EXIT_FINDINGS, "action": EXIT_FINDINGS}),
    ("truncated pickle", ["truncated.pkl"], [], None,
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
    ("encrypted zip member", ["encrypted.zip"], [], None,
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
    ("LFS pointer without object", ["weights.bin"], [], None,
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
    ("limit reached", ["deep.zip"], [], None,
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
    ("unreadable file", ["dangling.pkl"], [], None,
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
    # A fifo or device is not a model file and is never opened: a notice (skipped-not-regular).
    ("special file", ["pipe.pkl"], [], None, {"cli": EXIT_OK, "hook": EXIT_OK, "action": EXIT_OK}),
    # pre-commit only passes files that exist; a missing one there is a file it could not read.
    ("missing path", ["no-such-file.pkl"], [], None,
     {"cli": EXIT_USAGE, "hook": EXIT_INCOMPLETE, "action": EXIT_USAGE}),
    ("bad option value", ["clean.pkl"], ["--fail-on", "bogus"], None,
     {"cli": EXIT_USAGE, "hook": EXIT_USAGE, "action": EXIT_USAGE}),
    ("unknown option", ["clean.pkl"], ["--no-such-option"], None, {"cli": EXIT_USAGE, "hook": EXIT_USAGE}),
    ("invalid config", ["clean.pkl"], [], "bad.yaml",
     {"cli": EXIT_USAGE, "hook": EXIT_USAGE, "action": EXIT_USAGE}),
    ("missing config", ["clean.pkl"], [], "no-such.yaml",
     {"cli": EXIT_USAGE, "hook": EXIT_USAGE, "action": EXIT_USAGE}),
    ("incomplete whatever fail-on", ["truncated.pkl", "clean.pkl"], ["--fail-on", "critical"], "good.yaml",
     {"cli": EXIT_INCOMPLETE, "hook": EXIT_INCOMPLETE, "action": EXIT_INCOMPLETE}),
]


def _load_action() -> Callable[[Dict[str, str]], int]:
    spec = importlib.util.spec_from_file_location("safemodel_action_run", REPO_ROOT / "action" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.main  # type: ignore[no-any-return]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "ws"
    _make_files(root)
    monkeypatch.chdir(root)  # the action changes directory to its workspace: restored afterwards
    monkeypatch.setenv("SAFEMODEL_NO_CACHE", "1")
    yield root


def run_entry_point(entry: str, root: Path, files: List[str], options: List[str], config: Optional[str],
                    extra_env: Optional[Dict[str, str]] = None) -> int:
    """Run one entry point the way its caller would; returns its exit code."""
    cfg = ["--config", str(root / config)] if config else []
    if entry == "cli":
        try:
            return cli_main(["scan", "--no-cache", "--jobs", "1", *options, *cfg, *files])
        except SystemExit as exc:  # argparse exits on usage errors (with code 3 here)
            return int(exc.code or 0)
    if entry == "hook":
        try:
            return hook_main(["--no-cache", *options, *cfg, *files])
        except SystemExit as exc:
            return int(exc.code or 0)
    env = {"GITHUB_WORKSPACE": str(root), "GITHUB_OUTPUT": str(root.parent / "github_output"),
           "SAFEMODEL_ACTION_PATHS": "\n".join(files), "SAFEMODEL_ACTION_SUMMARY": "false",
           "SAFEMODEL_ACTION_ANNOTATIONS": "false", "SAFEMODEL_NO_CACHE": "1", **(extra_env or {})}
    if "--fail-on" in options:
        env["SAFEMODEL_ACTION_FAIL_ON"] = options[options.index("--fail-on") + 1]
    if config:
        env["SAFEMODEL_ACTION_CONFIG"] = config
    return _load_action()(env)


@pytest.mark.parametrize("entry", ["cli", "hook", "action"])
@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_cases(case: Tuple[str, List[str], List[str], Optional[str], Dict[str, int]], entry: str,
                    workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, files, options, config, expected = case
    if entry not in expected:
        pytest.skip(f"{name}: not an input of the {entry} entry point")
    code = run_entry_point(entry, workspace, files, options, config)
    out, err = capsys.readouterr()
    assert code == expected[entry], f"{entry} / {name}: exit {code}\n{out[-1500:]}\n{err[-1500:]}"


def test_unwritable_output_is_a_usage_error(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report could not be written: the run failed, whatever the scan found (never 0)."""
    for files in (["clean.pkl"], ["evil.pkl"]):
        code = cli_main(["scan", "--no-cache", "--format", "json", "--output",
                         str(workspace / "no-such-dir" / "report.json"), *files])
        assert code == EXIT_USAGE
        assert "cannot write" in capsys.readouterr().err


def test_action_unwritable_sarif_is_not_a_pass(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The SARIF file cannot be created (its directory is a file): reported, never exit 0."""
    (workspace / "blocker").write_text("a file where a directory should be")
    code = run_entry_point("action", workspace, ["clean.pkl"], [], None,
                           {"SAFEMODEL_ACTION_SARIF_FILE": "blocker/results.sarif"})
    capsys.readouterr()
    assert code != EXIT_OK


@pytest.mark.parametrize("argv,expected", [
    ([], EXIT_USAGE),                                  # no command
    (["no-such-command"], EXIT_USAGE),
    (["scan"], EXIT_USAGE),                            # no path
    (["scan", "--jobs", "0", "clean.pkl"], EXIT_USAGE),
    (["scan", "--format", "xml", "clean.pkl"], EXIT_USAGE),
    (["rules"], EXIT_OK),
    (["rules", "--format", "markdown"], EXIT_OK),
    (["rules", "--format", "bogus"], EXIT_USAGE),
    (["hub"], EXIT_USAGE),                             # no repo
    (["hub", "--repo-type", "bogus", "a/b"], EXIT_USAGE),
    (["cache", "--cache-dir", "no-such-cache-dir"], EXIT_USAGE),
])
def test_command_line_usage(argv: List[str], expected: int, workspace: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli_main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    capsys.readouterr()
    assert code == expected, argv


def test_action_bad_inputs_are_usage_errors(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ({"SAFEMODEL_ACTION_CHANGED_ONLY": "maybe"}, {"SAFEMODEL_ACTION_FAIL_ON": "info"}):
        assert run_entry_point("action", workspace, ["clean.pkl"], [], None, extra) == EXIT_USAGE
    capsys.readouterr()


# ---- Hub and the Hub cache ------------------------------------------------------------------------

@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    pytest.importorskip("huggingface_hub")
    from hub_server import fake_hub_env

    yield from fake_hub_env(tmp_path, monkeypatch)


HUB_CASES = [
    ("clean repo", ["acme/clean"], EXIT_OK),
    ("malicious repo", ["acme/evil"], EXIT_FINDINGS),
    ("truncated file", ["acme/truncated"], EXIT_INCOMPLETE),
    ("missing repo", ["acme/missing"], EXIT_INCOMPLETE),
    ("server error", ["acme/broken"], EXIT_INCOMPLETE),
    ("rate limited", ["acme/busy"], EXIT_INCOMPLETE),
    ("server error while reading files", ["acme/flaky"], EXIT_INCOMPLETE),
    ("missing repo and a malicious one", ["acme/missing", "acme/evil"], EXIT_FINDINGS),
    ("missing revision", ["acme/clean@no-such-branch"], EXIT_INCOMPLETE),
]


def _fill_hub(hub) -> None:  # type: ignore[no-untyped-def]
    hub.add_commit("acme/clean", {"model.pkl": CLEAN, "config.json": b"{}"})
    hub.add_commit("acme/evil", {"model.pkl": EVIL})
    hub.add_commit("acme/truncated", {"model.pkl": CLEAN[:-7]})
    hub.add_commit("acme/broken", {"config.json": b"{}"})
    hub.fail_status["acme/broken"] = 500
    hub.add_commit("acme/busy", {"config.json": b"{}"})
    hub.fail_status["acme/busy"] = 429
    hub.add_commit("acme/flaky", {"model.pkl": CLEAN})
    hub.fail_resolve["acme/flaky"] = 503


@pytest.mark.parametrize("entry", ["cli", "action"])
@pytest.mark.parametrize("case", HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hub_cases(case: Tuple[str, List[str], int], entry: str, hub, workspace: Path,  # type: ignore[no-untyped-def]
                   capsys: pytest.CaptureFixture[str]) -> None:
    name, repos, expected = case
    _fill_hub(hub)
    if entry == "cli":
        code = cli_main(["hub", "--no-cache", *repos])
    else:
        code = run_entry_point("action", workspace, [], [], None,
                               {"SAFEMODEL_ACTION_HUB_REPOS": "\n".join(repos)})
    out, err = capsys.readouterr()
    assert code == expected, f"{entry} / {name}: exit {code}\n{out[-1500:]}\n{err[-1500:]}"


def test_cache_command(hub, tmp_path: Path, workspace: Path,  # type: ignore[no-untyped-def]
                       capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import hf_hub_download

    _fill_hub(hub)
    cache = tmp_path / "hf-cache"
    for repo in ("acme/clean", "acme/evil"):
        hf_hub_download(repo, "model.pkl", cache_dir=cache, endpoint=hub.endpoint, token=False)
    assert cli_main(["cache", "--no-cache", "--cache-dir", str(cache)]) == EXIT_FINDINGS
    clean_only = tmp_path / "hf-cache-clean"
    hf_hub_download("acme/clean", "model.pkl", cache_dir=clean_only, endpoint=hub.endpoint, token=False)
    assert cli_main(["cache", "--no-cache", "--cache-dir", str(clean_only)]) == EXIT_OK
    (clean_only / "models--acme--corrupt").mkdir()  # no snapshots folder: a corrupted entry
    assert cli_main(["cache", "--no-cache", "--cache-dir", str(clean_only)]) == EXIT_INCOMPLETE
    capsys.readouterr()


# ---- issue 17 item 7: standard output that cannot be written ----------------------------------------

@pytest.mark.parametrize("how", ["dev-full", "closed", "broken-pipe"])
def test_unwritable_stdout_is_exit_3_with_one_line(how: str, tmp_path: Path) -> None:
    import subprocess

    model = tmp_path / "evil.pkl"
    model.write_bytes(EVIL)
    cli = f"{sys.executable} -m safemodel_ci scan --no-cache --format json {model}"
    script = {
        "dev-full": f"{cli} > /dev/full; echo $? >&2",
        "closed": f"{cli} >&-; echo $? >&2",
        # the reader is gone before the report is written (the interpreter takes ~0.2 s to start)
        "broken-pipe": f"set -o pipefail; {cli} | true; echo ${{PIPESTATUS[0]}} >&2",
    }[how]
    if how == "dev-full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    *messages, code = proc.stderr.strip().splitlines()
    assert int(code) == EXIT_USAGE, proc.stderr
    assert len(messages) == 1 and "cannot write the report to standard output" in messages[0], proc.stderr
    assert "Traceback" not in proc.stderr

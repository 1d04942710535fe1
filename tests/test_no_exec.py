"""Nothing scanned is ever executed: the whole scanner runs over every fixture under an audit hook.

The scan runs in a child process so the hook (which cannot be removed) does not watch pytest.
A first pass imports whatever the readers import lazily (h5py, py7zr, ...); during the second,
watched pass any import, exec, compile, process, os.system or socket event is a failure, and the
canary file that every malicious payload would create must not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fixture_factory import MALICIOUS, make_zoo

from conftest import CORPUS

WATCHER = r"""
import json, os, sys
from safemodel_ci.scanner import ScanOptions, scan_file

paths = json.loads(sys.argv[1])
options = ScanOptions()
for p in paths:                      # warm-up: lazy imports of readers happen here
    scan_file(p, options)

# os.fork is not forbidden: the HDF5 reader forks to isolate libhdf5 under a time limit. What a
# forked child does is watched too: the hook writes to a log file shared across the fork.
FORBIDDEN = ("exec", "compile", "import", "subprocess.Popen", "os.system", "os.exec", "os.spawn",
             "os.posix_spawn", "socket.", "ctypes.", "pty.spawn", "webbrowser.open",
             "shutil.", "os.remove", "os.rename", "os.mkdir")
log_fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
watching = [True]

def hook(event, args):
    if watching[0] and event.startswith(FORBIDDEN):
        os.write(log_fd, (json.dumps([event, repr(args)[:200], os.getpid()]) + "\n").encode())

sys.addaudithook(hook)
verdicts = {}
for p in paths:
    r = scan_file(p, options)
    verdicts[p] = [r.complete, [f.rule_id for f in r.findings if f.severity >= 3 and not f.unscanned]]
watching[0] = False
print(json.dumps({"verdicts": verdicts}))
"""


def test_scanning_every_fixture_executes_nothing(tmp_path: Path) -> None:
    canary = tmp_path / "CANARY-was-executed"
    zoo = tmp_path / "zoo"
    expected = make_zoo(zoo, canary)
    paths = [str(zoo / name) for name in sorted(expected)]
    if (CORPUS / "manifest.json").is_file():
        paths += [str(p) for p in sorted(CORPUS.iterdir()) if p.name not in ("manifest.json",)]
    log = tmp_path / "audit-events.jsonl"
    proc = subprocess.run([sys.executable, "-c", WATCHER, json.dumps(paths), str(log)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert events == [], f"scanning raised audited events: {events[:10]}"
    assert not canary.exists(), "a payload ran during the scan"
    # The watched pass saw real work: every malicious zoo file was blocked or left incomplete.
    for name, verdict in expected.items():
        complete, blocking = out["verdicts"][str(zoo / name)]
        if verdict == MALICIOUS:
            assert blocking or not complete, f"{name} passed as clean"

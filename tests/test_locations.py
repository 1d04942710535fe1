"""Locations are data (issue 21): a scan context carries a :class:`Location` from the start, each
member a reader descends into is one element of its chain, and a source that knows where its bytes
came from (the Hub, the Hugging Face cache) hands that location to the scanner, so findings are born
there instead of being moved afterwards. Reports still show the chain joined with ``:``.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from safemodel_ci import parallel
from safemodel_ci.cache import ResultCache, scan_file_cached
from safemodel_ci.context import ScanContext
from safemodel_ci.findings import HF_CACHE, HUB, LOCAL, FileResult, Finding, Location
from safemodel_ci.parallel import ScanPlan, scan_paths
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions, scan_file


class _Reduce:
    """Pickles to ``func(*args)``; dumping does not call it."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (self.func, self.args)


EVIL = pickle.dumps(_Reduce(os.system, "echo pwned > /tmp/safemodel-locations-canary"), protocol=2)
#: A member name holding the separator reports use to join the chain: only the data tells the levels.
ODD = "odd:name.pkl"


def torch_with_nested_pickle() -> bytes:
    """A real torch.save archive whose data.pkl calls pickle.loads on bytes holding an os.system pickle."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Reduce(pickle.loads, EVIL), protocol=4)
            dst.writestr(info.filename, data)
    return out.getvalue()


def zip_in_zip() -> bytes:
    """outer.zip holding inner.zip holding ``odd:name.pkl`` (an os.system pickle)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr(ODD, EVIL)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("inner.zip", inner.getvalue())
    return outer.getvalue()


def chains(result: FileResult, rule_id: str = "pickle-dangerous-global") -> List[Tuple[str, ...]]:
    return sorted(f.location.members for f in result.findings if f.rule_id == rule_id)


def check_nested(results: Dict[str, FileResult], file_location: Any) -> None:
    """The two fixtures' dangerous globals, at ``file_location(name)`` with one chain element per level."""
    torch_result, zip_result = results["m.pt"], results["o.zip"]
    nested = [c for c in chains(torch_result) if len(c) == 2]
    assert len(nested) == 1, chains(torch_result)
    assert nested[0][0] == "archive/data.pkl" and nested[0][1].startswith("<nested pickle @")
    assert chains(zip_result) == [("inner.zip", ODD)]
    for name, result in results.items():
        assert result.location == file_location(name)
        for f in result.findings:
            assert f.location.file == file_location(name), (name, f)
            # Reports show the chain joined, exactly as before (``archive/data.pkl:<nested pickle @78>``).
            assert f.member == (":".join(f.location.members) if f.location.members else None)
            assert f.path == file_location(name).display
    odd = next(f for f in zip_result.findings if f.rule_id == "pickle-dangerous-global")
    assert odd.member == "inner.zip:odd:name.pkl" and len(odd.location.members) == 2


@pytest.fixture()
def files(tmp_path: Path) -> Dict[str, Path]:
    out = {"m.pt": tmp_path / "m.pt", "o.zip": tmp_path / "o.zip"}
    out["m.pt"].write_bytes(torch_with_nested_pickle())
    out["o.zip"].write_bytes(zip_in_zip())
    return out


def test_a_child_context_grows_the_chain_by_one_element() -> None:
    ctx = ScanContext("m.pt", Policy())
    assert ctx.location == Location.local("m.pt") and ctx.member is None
    inner = ctx.child("archive/data.pkl").child("<nested pickle @12>")
    assert inner.location.members == ("archive/data.pkl", "<nested pickle @12>")
    assert inner.member == "archive/data.pkl:<nested pickle @12>" and inner.depth == 2
    assert inner.display_name == "m.pt:archive/data.pkl:<nested pickle @12>"
    finding = inner.report("pickle-unknown-global", "imports a.b", offset=3)
    assert finding.location == inner.location and finding.member == inner.member
    # A context made at a Hub file stays there, however deep, and through with_policy / isolated.
    hub = Location.in_repo(HUB, "acme/x", "a" * 40, "sub/m.pt")
    deep = ScanContext(hub.display, Policy(), location=hub).child("a.zip").isolated().with_policy(Policy())
    assert deep.location == hub.inside("a.zip") and deep.path == hub.display
    assert deep.report("pickle-unknown-global", "x").location.kind == HUB


def test_nested_members_are_one_element_per_level(files: Dict[str, Path]) -> None:
    results = {name: scan_file(str(p), ScanOptions()) for name, p in files.items()}
    check_nested(results, lambda name: Location.local(str(files[name])))
    assert all(r.location.kind == LOCAL for r in results.values())


def test_the_result_cache_keeps_member_chains(files: Dict[str, Path], tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path / "results"))
    first = {name: scan_file_cached(str(p), ScanOptions(), cache) for name, p in files.items()}
    again = {name: scan_file_cached(str(p), ScanOptions(), cache) for name, p in files.items()}
    assert cache.hits == 2 and all(r.cached for r in again.values())
    check_nested(again, lambda name: Location.local(str(files[name])))
    assert {n: r.findings for n, r in again.items()} == {n: r.findings for n, r in first.items()}


def _recording_batch(paths: List[str]) -> List[FileResult]:
    """parallel._scan_batch, noting which process scanned the batch."""
    with open(os.environ["SAFEMODEL_TEST_PIDS"], "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()}\n")
    return _ORIGINAL_BATCH(paths)


_ORIGINAL_BATCH = parallel._scan_batch


def test_a_structured_location_survives_the_worker_processes(files: Dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [files["m.pt"], files["o.zip"]]
    for i in range(parallel.MIN_FILES_FOR_PROCESSES):
        paths.append(tmp_path / f"filler{i}.pkl")
        paths[-1].write_bytes(pickle.dumps({"i": i}))
    pids = tmp_path / "pids"
    monkeypatch.setenv("SAFEMODEL_TEST_PIDS", str(pids))
    monkeypatch.setattr(parallel, "_scan_batch", _recording_batch)
    results = list(scan_paths([str(p) for p in paths], ScanPlan(), jobs=2))
    workers = set(pids.read_text().split())
    assert workers and str(os.getpid()) not in workers  # every file went through a worker process
    check_nested({"m.pt": results[0], "o.zip": results[1]}, lambda name: Location.local(str(files[name])))
    serial = list(scan_paths([str(p) for p in paths], ScanPlan(), jobs=1))
    assert [[f.location for f in r.findings] for r in results] == \
        [[f.location for f in r.findings] for r in serial]


# ---- sources that know where their bytes came from ------------------------------------------------------

@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pytest.importorskip("huggingface_hub")
    from hub_server import fake_hub_env

    yield from fake_hub_env(tmp_path, monkeypatch)


@pytest.fixture()
def born() -> Iterator[Dict[str, Any]]:
    """Records where every reader finding is born; moving a result or finding afterwards fails.
    ``record["stop"]()`` ends the watch (a result-cache hit is read back from its stored form)."""
    record: Dict[str, Any] = {"at": [], "moves": 0}
    report = ScanContext.report

    def spy(self: ScanContext, *args: Any, **kwargs: Any) -> Finding:
        finding = report(self, *args, **kwargs)
        record["at"].append(finding.location)
        return finding

    def moved(*args: Any, **kwargs: Any) -> Any:
        record["moves"] += 1
        raise AssertionError("a result was re-placed after its scan")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ScanContext, "report", spy)
        mp.setattr(FileResult, "placed", moved)
        mp.setattr(Finding, "placed", moved)
        record["stop"] = mp.undo
        yield record


def test_hub_findings_are_born_at_the_hub_file(hub: Any, tmp_path: Path, born: Dict[str, Any]) -> None:
    from safemodel_ci.sources.hub import HubClientConfig, HubRepoScanner

    sha = hub.add_commit("acme/nested", {"m.pt": torch_with_nested_pickle(), "o.zip": zip_in_zip()})
    results = tmp_path / "results"
    scanner = HubRepoScanner(HubClientConfig.from_environment(), ScanOptions(),
                             result_cache=ResultCache(str(results)))
    scan = scanner.scan("acme/nested")
    assert scan.error is None and scan.sha == sha
    assert born["moves"] == 0 and born["at"]
    assert {(at.kind, at.repo, at.revision) for at in born["at"]} == {(HUB, "acme/nested", sha)}
    first = {r.location.path: r for r in scan.files}
    check_nested(first, lambda name: Location.in_repo(HUB, "acme/nested", sha, name))
    # From the result cache (the files are LFS: keyed by sha256): the same locations, chains and all.
    born["stop"]()  # a cache hit is read back from its stored form, under the caller's location
    again = HubRepoScanner(HubClientConfig.from_environment(), ScanOptions(),
                           result_cache=ResultCache(str(results))).scan("acme/nested")
    assert again.from_cache == 2
    check_nested({r.location.path: r for r in again.files},
                 lambda name: Location.in_repo(HUB, "acme/nested", sha, name))
    assert [f.location for r in again.files for f in r.findings] == \
        [f.location for r in scan.files for f in r.findings]


def test_cache_findings_are_born_at_the_cache_file(hub: Any, tmp_path: Path, born: Dict[str, Any]) -> None:
    from huggingface_hub import hf_hub_download

    from safemodel_ci.sources.hfcache import scan_cache

    sha = hub.add_commit("acme/nested", {"m.pt": torch_with_nested_pickle(), "o.zip": zip_in_zip()})
    cache = tmp_path / "hf"
    for name in ("m.pt", "o.zip"):
        hf_hub_download("acme/nested", name, cache_dir=cache, endpoint=hub.endpoint, token=False)
    results = tmp_path / "results"
    scan = scan_cache(str(cache), ScanOptions(), result_cache=ResultCache(str(results)))
    assert born["moves"] == 0 and born["at"]
    assert {(at.kind, at.repo, at.revision) for at in born["at"]} == {(HF_CACHE, "acme/nested", sha)}
    check_nested({r.location.path: r for r in scan.files},
                 lambda name: Location.in_repo(HF_CACHE, "acme/nested", sha, name))
    born["stop"]()
    again = scan_cache(str(cache), ScanOptions(), result_cache=ResultCache(str(results)))
    assert again.blobs_from_cache == 2
    check_nested({r.location.path: r for r in again.files},
                 lambda name: Location.in_repo(HF_CACHE, "acme/nested", sha, name))
    # A second name for a blob already scanned is the one place a result is moved (same bytes, other
    # name): its findings keep their chains under the new name.
    snapshot = cache / "models--acme--nested" / "snapshots" / sha
    os.symlink(os.readlink(snapshot / "o.zip"), snapshot / "copy.zip")
    twice = scan_cache(str(cache), ScanOptions(), verify=False)
    by_path = {r.location.path: r for r in twice.files}
    assert chains(by_path["copy.zip"]) == [("inner.zip", ODD)]
    assert by_path["copy.zip"].location == Location.in_repo(HF_CACHE, "acme/nested", sha, "copy.zip")

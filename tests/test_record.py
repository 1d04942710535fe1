"""safemodel_ci.record: the plain-record base that replaced the dataclasses on the scan's path does
what those dataclasses did (repr, eq, hash, frozen, replace, asdict, fields, pickling), checked
beside a real dataclass of the same shape where the behaviour is the dataclass's."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Dict, List, Optional

import pytest

from safemodel_ci.config import Config, IgnoredFile
from safemodel_ci.context import Limits
from safemodel_ci.findings import FileResult, Finding, Location, ScanReport, Severity
from safemodel_ci.parallel import ScanPlan
from safemodel_ci.policy import Policy
from safemodel_ci.record import Record
from safemodel_ci.scanner import ScanOptions
from safemodel_ci.settings import Settings


class Point(Record, frozen=True):
    __slots__ = ("x", "y", "tags")

    def __init__(self, x: int, y: int = 0, tags: Optional[List[str]] = None) -> None:
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "tags", () if tags is None else tuple(tags))


@dataclasses.dataclass(frozen=True)
class DataPoint:
    x: int
    y: int = 0
    tags: tuple = ()


class Box(Record):
    __slots__ = ("items", "label", "cache")
    _repr_skip = frozenset({"cache"})
    _compare_skip = frozenset({"cache"})
    _init_skip = frozenset({"cache"})

    def __init__(self, items: Optional[List[object]] = None, label: str = "") -> None:
        self.items = [] if items is None else items
        self.label = label
        self.cache = None


@dataclasses.dataclass
class DataBox:
    items: List[object] = dataclasses.field(default_factory=list)
    label: str = ""
    cache: object = dataclasses.field(default=None, init=False, repr=False, compare=False)


class Point3(Point):
    """A subclass of a frozen record without ``frozen=True`` is frozen too (as for dataclasses)."""

    __slots__ = ()

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_repr_matches_the_dataclass_s() -> None:
    assert repr(Point(1, 2, ["a"])) == repr(DataPoint(1, 2, ("a",))).replace("DataPoint", "Point")
    box, data = Box([1], "b"), DataBox([1], "b")
    box.cache = data.cache = "hidden"
    assert repr(box) == repr(data).replace("DataBox", "Box")
    assert "cache" not in repr(box)


def test_eq_compares_fields_of_the_same_class_only() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert Point(1) != DataPoint(1)  # NotImplemented both ways: unequal, as two dataclasses would be
    assert Point(1, 2) != Point3(1, 2)  # another class, even a subclass (a dataclass's rule)
    a, b = Box([1], "x"), Box([1], "x")
    a.cache = "one"
    assert a == b  # a compare=False field does not count


def test_hash_for_frozen_only() -> None:
    assert hash(Point(1, 2, ["t"])) == hash(Point(1, 2, ["t"]))
    assert len({Point(1, 2), Point(1, 2), Point(2, 2)}) == 2
    assert Box.__hash__ is None and DataBox.__hash__ is None
    with pytest.raises(TypeError):
        hash(Box())
    with pytest.raises(TypeError):  # a dict field is unhashable, as in the frozen dataclass
        hash(Policy(severity_overrides={"x": Severity.LOW}))
    assert hash(Limits()) == hash(Limits())


def test_frozen_assignment_raises_the_dataclass_error() -> None:
    p = Point(1)
    for obj in (p, Point3(1), Limits(), Finding("r", Severity.LOW, "a.pkl", "m", "do")):
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field"):
            obj.x = 5  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'y'"):
        del p.y
    assert issubclass(dataclasses.FrozenInstanceError, AttributeError)
    assert (p.x, p.y) == (1, 0)
    box = Box()
    box.label = "mutable"
    assert box.label == "mutable"
    with pytest.raises(AttributeError):  # slots: no attribute outside the fields
        box.other = 1  # type: ignore[attr-defined]


def test_replace_goes_through_init_like_dataclasses_replace() -> None:
    p = Point(1, 2, ["a"])
    q = p.replace(y=5, tags=["b", "c"])
    assert (q.x, q.y, q.tags) == (1, 5, ("b", "c")) and (p.y, p.tags) == (2, ("a",))  # __init__ ran
    assert dataclasses.replace(DataPoint(1, 2), y=5) == DataPoint(1, 5)
    with pytest.raises(TypeError):
        p.replace(z=1)
    box = Box([1], "b")
    box.cache = "stale"
    new = box.replace(label="c")
    assert new.cache is None and new.items is box.items  # init=False fields are made anew
    with pytest.raises(TypeError):
        box.replace(cache="x")
    # The project's own: a finding moved elsewhere follows its location (derived in __init__).
    f = Finding("r", Severity.HIGH, "a.pkl", "m", "do", member="data.pkl")
    moved = f.replace(location=Location.local("b.pkl", "x/data.pkl"))
    assert (moved.path, moved.member) == ("b.pkl", "x/data.pkl") and f.path == "a.pkl"
    assert Limits().replace(max_depth=2) == Limits(max_depth=2)


def test_as_dict_and_field_names_match_dataclasses() -> None:
    assert Point(1, 2, ["a"]).as_dict() == dataclasses.asdict(DataPoint(1, 2, ("a",)))
    assert Point.field_names() == tuple(f.name for f in dataclasses.fields(DataPoint))
    nested = Box([Point(1), {"k": [Point(2)]}], "n").as_dict()
    assert nested == {"items": [{"x": 1, "y": 0, "tags": ()}, {"k": [{"x": 2, "y": 0, "tags": ()}]}],
                      "label": "n", "cache": None}
    limits = Limits(max_depth=3).as_dict()
    assert limits["max_depth"] == 3 and list(limits) == list(Limits.field_names())
    assert Point3.field_names() == ("x", "y", "tags")


def test_records_pickle_round_trip() -> None:
    """Our own objects, as the worker pool sends them (plans, options, results): pickled by this
    test and read back here, nothing foreign is loaded."""
    policy = Policy(allow_globals=frozenset({"a.b"}), severity_overrides={"x": Severity.LOW})
    plan = ScanPlan(ScanOptions(policy, Limits(max_depth=4)),
                    Config(ignores=(IgnoredFile("0" * 64, "ok", "m.pkl", "c:1"),)), "/tmp/cache")
    result = FileResult("a.pkl", 10, ["pickle"], [Finding("r", Severity.HIGH, "a.pkl", "m", "do", offset=3)])
    report = ScanReport([result], errors=[("t", "e")])
    for obj in (Point(1, 2, ["a"]), Point3(3, 4), Box([1], "b"), plan, result, report, Settings(jobs=2)):
        back = pickle.loads(pickle.dumps(obj))
        assert type(back) is type(obj) and back == obj
        assert copy.copy(obj) == obj and copy.deepcopy(obj) == obj
    back_plan = pickle.loads(pickle.dumps(plan))
    with pytest.raises(dataclasses.FrozenInstanceError):  # still frozen after unpickling
        back_plan.cache_dir = None  # type: ignore[misc]
    assert back_plan.options.limits.max_depth == 4 and back_plan.config.ignores[0].path == "m.pkl"


def test_defaults_are_fresh_per_object() -> None:
    """``field(default_factory=...)``: each object gets its own list/dict."""
    a, b = FileResult("a"), FileResult("b")
    a.findings.append(Finding("r", Severity.LOW, "a", "m", "do"))
    assert b.findings == [] and a.formats is not b.formats
    r1, r2 = ScanReport([]), ScanReport([])
    r1.extra["k"] = 1
    assert r2.extra == {}
    assert Finding("r", Severity.LOW, "a", "m", "do").details == {}


def test_settings_repr_and_eq_leave_out_the_computed_fields() -> None:
    s, t = Settings(quiet=True), Settings(quiet=True)
    s._options = ScanOptions()
    assert s == t and "_options" not in repr(s) and "warn" not in repr(s) and "quiet=True" in repr(s)
    assert s.replace(output="x")._options is None


def test_records_are_dict_free() -> None:
    """Slots: no per-object ``__dict__`` on the records the scan makes by the thousand."""
    for obj in (Finding("r", Severity.LOW, "a", "m", "do"), FileResult("a"), Limits(), Point(1)):
        assert not hasattr(obj, "__dict__")


_FIELDS: Dict[type, tuple] = {
    Finding: ("rule_id", "severity", "path", "message", "remedy", "member", "offset", "unscanned",
              "details", "location"),
    FileResult: ("path", "size", "formats", "findings", "bytes_read", "cached", "location"),
    ScanReport: ("files", "fail_on", "errors", "extra", "excluded", "hidden", "whole", "targets"),
    ScanPlan: ("options", "config", "cache_dir"),
    ScanOptions: ("policy", "limits"),
    Policy: ("allow_globals", "severity_overrides", "allow_reasons"),
}


@pytest.mark.parametrize("cls", list(_FIELDS), ids=lambda c: c.__name__)
def test_converted_classes_keep_their_fields_in_order(cls: type) -> None:
    assert cls.field_names() == _FIELDS[cls]  # type: ignore[attr-defined]

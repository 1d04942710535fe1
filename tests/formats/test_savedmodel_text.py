"""saved_model.pbtxt: TensorFlow loads a text-format SavedModel when no saved_model.pb is beside it.
Before this reader it matched no format (exit 0) whatever ops it held. The binary SavedModels of
test_savedmodel (built with protobuf's own encoder) are printed as text by protobuf's text_format
and must be judged exactly as their binary form; a hand-written one in TensorFlow's own text style
(enum names, shapes, tags) is judged too. Nothing is loaded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Dict

import pytest
from test_savedmodel import MSG, _saved_model, _scan, _tf1_saved_model

from safemodel_ci.findings import Severity

text_format = pytest.importorskip("google.protobuf.text_format")

BUILDERS: Dict[str, Callable[[], bytes]] = {
    "ordinary": _saved_model,
    "tf1": _tf1_saved_model,
    "readfile_in_function": lambda: _saved_model(extra_fn_ops=[("read_secret", "ReadFile", {})]),
    "pyfunc_and_print_to_file": lambda: _saved_model(extra_graph_ops=[
        ("cb", "PyFunc", {"token": "pyfunc_0"}), ("log", "PrintV2", {"output_stream": "file:///tmp/x"})]),
    "op_named_by_func_attr": lambda: _saved_model(func_ref="WriteFile"),
    "tf1_restore_from_constant": lambda: _tf1_saved_model(restore_from="save/leak"),
    "tf1_main_op_runs_saver": lambda: _tf1_saved_model(main_op_runs="save/SaveV2"),
    "no_saver": lambda: _saved_model(saver=False),
}


def _verdict(path: Path) -> Counter:
    return Counter((f.rule_id, f.severity, str(sorted((f.details or {}).items())))
                   for f in _scan(path).findings)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_text_form_is_judged_as_the_binary_form(tmp_path: Path, name: str) -> None:
    binary = BUILDERS[name]()
    text = text_format.MessageToString(MSG["SavedModel"].FromString(binary))
    pb = tmp_path / "bin" / "saved_model.pb"
    pbtxt = tmp_path / "txt" / "saved_model.pbtxt"
    pb.parent.mkdir()
    pbtxt.parent.mkdir()
    pb.write_bytes(binary)
    pbtxt.write_text(text)
    assert _verdict(pbtxt) == _verdict(pb)
    assert "savedmodel" in _scan(pbtxt).formats


WRITES_ON_LOAD = '''# written by hand in TensorFlow's text style
saved_model_schema_version: 1
meta_graphs {
  meta_info_def { tags: "serve" tensorflow_version: "2.16.1" }
  graph_def {
    node { name: "path" op: "Const"
      attr { key: "dtype" value { type: DT_STRING } }
      attr { key: "value" value { tensor { dtype: DT_STRING tensor_shape { } string_val: "/tmp/pwned" } } } }
    node { name: "w" op: "WriteFile" input: "path" input: "path" }
    versions { producer: 1645 }
  }
  collection_def { key: "saved_model_main_op" value { node_list { value: "w" } } }
}
'''


def test_hand_written_pbtxt_that_writes_a_file_on_load(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pbtxt"
    path.write_text(WRITES_ON_LOAD)
    result = _scan(path)
    hits = [f for f in result.findings if f.rule_id == "tf-dangerous-op"]
    assert [h.details["op"] for h in hits] == ["WriteFile"] and hits[0].severity == Severity.CRITICAL


def test_text_that_does_not_parse_is_unscanned(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pbtxt"
    path.write_text(WRITES_ON_LOAD.replace('op: "WriteFile"', 'op: WriteFile {'))
    result = _scan(path)
    assert [f.rule_id for f in result.findings] == ["unscanned-parse-error"]
    assert not result.complete or result.blocking(Severity.HIGH)

"""``saved_model.pbtxt``: a SavedModel in protobuf text format.

TensorFlow reads ``saved_model.pbtxt`` when a folder has no ``saved_model.pb``
(``loader_impl.parse_saved_model``, ``cc/saved_model/reader.cc``) and runs its graph exactly as a
binary one: main/init ops, signatures, function libraries. The text is parsed with protobuf's own
text-format parser against a schema holding exactly the fields :mod:`.savedmodel` judges (field
numbers and types from TensorFlow's protos; other fields are skipped as the text parser skips unknown
fields), re-encoded in binary and judged by the binary SavedModel reader. Text that does not parse,
or a missing ``protobuf`` package, is unscanned, never clean.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..context import ScanContext
from ..source import ByteSource, BytesSource
from .interface import FormatReader

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (start-up)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: The first field of a text-format SavedModel (comments and blank lines may precede it).
_START = re.compile(rb"\A(?:\s|#[^\n]*\n)*(saved_model_schema_version|meta_graphs)\s*[:{]")
#: tensorflow/core/framework/types.proto ``DataType`` (the _REF forms are +100).
_DTYPES = {"DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4, "DT_INT16": 5,
           "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9, "DT_BOOL": 10, "DT_QINT8": 11,
           "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14, "DT_QINT16": 15, "DT_QUINT16": 16,
           "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19, "DT_RESOURCE": 20, "DT_VARIANT": 21,
           "DT_UINT32": 22, "DT_UINT64": 23, "DT_FLOAT8_E5M2": 24, "DT_FLOAT8_E4M3FN": 25,
           "DT_FLOAT8_E4M3FNUZ": 26, "DT_FLOAT8_E4M3B11FNUZ": 27, "DT_FLOAT8_E5M2FNUZ": 28, "DT_INT4": 29,
           "DT_UINT4": 30, "DT_INT2": 31, "DT_UINT2": 32}

#: message -> [(field name, number, kind, type)]; kind: "one" / "many"; type: a scalar type name or a
#: message name (map fields are repeated key/value entry messages, as they are on the wire).
_SCHEMA: dict = {
    "SavedModel": [("saved_model_schema_version", 1, "one", "int64"),
                   ("meta_graphs", 2, "many", "MetaGraphDef")],
    "MetaGraphDef": [("graph_def", 2, "one", "GraphDef"), ("saver_def", 3, "one", "SaverDef"),
                     ("collection_def", 4, "many", "CollectionEntry"),
                     ("signature_def", 5, "many", "SignatureEntry")],
    "GraphDef": [("node", 1, "many", "NodeDef"), ("library", 2, "one", "FunctionDefLibrary")],
    "FunctionDefLibrary": [("function", 1, "many", "FunctionDef")],
    "FunctionDef": [("signature", 1, "one", "OpDef"), ("node_def", 3, "many", "NodeDef"),
                    ("attr", 5, "many", "AttrEntry")],
    "OpDef": [("name", 1, "one", "string"), ("input_arg", 2, "many", "ArgDef")],
    "ArgDef": [("name", 1, "one", "string")],
    "NodeDef": [("name", 1, "one", "string"), ("op", 2, "one", "string"), ("input", 3, "many", "string"),
                ("attr", 5, "many", "AttrEntry")],
    "AttrEntry": [("key", 1, "one", "string"), ("value", 2, "one", "AttrValue")],
    "AttrValue": [("list", 1, "one", "ListValue"), ("s", 2, "one", "bytes"),
                  ("tensor", 8, "one", "TensorProto"), ("func", 10, "one", "NameAttrList")],
    "ListValue": [("func", 9, "many", "NameAttrList")],
    "NameAttrList": [("name", 1, "one", "string"), ("attr", 2, "many", "AttrEntry")],
    "TensorProto": [("dtype", 1, "one", "DataType"), ("string_val", 8, "many", "bytes")],
    "SaverDef": [("filename_tensor_name", 1, "one", "string"), ("save_tensor_name", 2, "one", "string"),
                 ("restore_op_name", 3, "one", "string")],
    "CollectionEntry": [("key", 1, "one", "string"), ("value", 2, "one", "CollectionDef")],
    "CollectionDef": [("node_list", 1, "one", "NodeList")],
    "NodeList": [("value", 1, "many", "string")],
    "SignatureEntry": [("key", 1, "one", "string"), ("value", 2, "one", "SignatureDef")],
    "SignatureDef": [("outputs", 2, "many", "TensorInfoEntry")],
    "TensorInfoEntry": [("key", 1, "one", "string"), ("value", 2, "one", "TensorInfo")],
    "TensorInfo": [("name", 1, "one", "string")],
}


@lru_cache(maxsize=1)
def _saved_model_class() -> Any:
    """The SavedModel message class of the subset schema (built once; protobuf is imported lazily)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="safemodel_savedmodel_subset.proto",
                                             package="safemodel_subset", syntax="proto3")
    enum = fdp.enum_type.add(name="DataType")
    for name, number in sorted(_DTYPES.items(), key=lambda kv: kv[1]):
        enum.value.add(name=name, number=number)
    for name, number in sorted(_DTYPES.items(), key=lambda kv: kv[1]):
        if number:
            enum.value.add(name=f"{name}_REF", number=number + 100)
    F = descriptor_pb2.FieldDescriptorProto
    scalars = {"int64": F.TYPE_INT64, "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES}
    for msg, fields in _SCHEMA.items():
        m = fdp.message_type.add(name=msg)
        for fname, number, kind, ftype in fields:
            f = m.field.add(name=fname, number=number,
                            label=F.LABEL_REPEATED if kind == "many" else F.LABEL_OPTIONAL)
            if ftype in scalars:
                f.type = scalars[ftype]
            elif ftype == "DataType":
                f.type = F.TYPE_ENUM
                f.type_name = ".safemodel_subset.DataType"
            else:
                f.type = F.TYPE_MESSAGE
                f.type_name = f".safemodel_subset.{ftype}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("safemodel_subset.SavedModel")
    return message_factory.GetMessageClass(desc)


def text_to_binary(text: bytes) -> bytes:
    """The binary encoding of the judged fields of a text-format SavedModel (ValueError if it does
    not parse; ImportError without protobuf)."""
    from google.protobuf import text_format

    cls = _saved_model_class()
    msg = cls()
    try:
        text_format.Parse(text.decode("utf-8"), msg, allow_unknown_field=True)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from exc
    return bytes(msg.SerializeToString(deterministic=True))


class SavedModelTextReader(FormatReader):
    """``saved_model.pbtxt``: parsed, re-encoded, judged as ``saved_model.pb``."""

    name = "savedmodel-text"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return bool(_START.match(head))

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        from .savedmodel import scan_saved_model

        if ctx.json_too_large(source.size, "text-format SavedModel"):
            return
        try:
            data = text_to_binary(source.read_at(0, source.size))
        except ImportError:
            ctx.report("unscanned-unsupported", "text-format SavedModel (saved_model.pbtxt): parsing it "
                       "needs the protobuf package (pip install protobuf); its graph was not inspected")
            return
        except ValueError as exc:
            ctx.report("unscanned-parse-error", f"text-format SavedModel does not parse ({exc}); TensorFlow "
                       "refuses text it cannot parse, but its graph was not inspected")
            return
        ctx.add_format("savedmodel")
        scan_saved_model(BytesSource(data, name=f"{source.name} (re-encoded)"), ctx)


__all__ = ["SavedModelTextReader", "text_to_binary"]

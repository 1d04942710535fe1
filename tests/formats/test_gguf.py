"""GGUF headers and chat templates in GGUF metadata, tokenizer_config.json and .jinja files."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from chat_templates_data import TEMPLATES

from safemodel_ci.findings import Severity
from safemodel_ci.formats.chat_template import check_template
from safemodel_ci.scanner import ScanOptions, scan_file

#: Published template-injection payloads (CVE-2024-34359 and the usual SSTI variants).
PAYLOADS = {
    "llama-cpp-python PoC": "{% for x in ().__class__.__base__.__subclasses__() %}{% if \"warning\" in "
                            "x.__name__ %}{{x()._module.__builtins__['__import__']('os').popen(\"touch "
                            "/tmp/retr0reg\")}}{%endif%}{% endfor %}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner": "{{ joiner.__init__.__globals__ }}",
    "attr filter with escapes": "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fbase\\x5f\\x5f') }}",
    "request-free self": "{{ self._TemplateReference__context }}",
}


def _scan(path: Path):
    return scan_file(str(path), ScanOptions())


# ---- GGUF bytes, per ggml docs/gguf.md -------------------------------------------------------

def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf(kvs: List[Tuple[str, int, bytes]], tensors: int = 0, version: int = 3,
          tensor_infos: bytes = b"", claimed_kv: Optional[int] = None) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", version, tensors, len(kvs) if claimed_kv is None else claimed_kv)
    for key, vtype, value in kvs:
        out += _s(key) + struct.pack("<I", vtype) + value
    return out + tensor_infos


def _kv_string(key: str, value: str) -> Tuple[str, int, bytes]:
    return key, 8, _s(value)


def test_real_chat_templates_pass() -> None:
    for name, template in TEMPLATES.items():
        assert check_template(template) == [], name


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_injection_payloads_are_critical(name: str) -> None:
    issues = check_template(PAYLOADS[name])
    assert issues and any(i.rule_id == "chat-template-code" for i in issues), name


@pytest.mark.parametrize("template", [
    "{% set u = '__' %}{{ messages[u ~ 'class' ~ u] }}",
    "{{ messages['__cla' + 'ss__'] }}",
    "{{ messages|map(attribute='__cla' ~ 'ss__')|list }}",
    "{% include 'other.jinja' %}",
    "{{ messages[('_','_','class','_','_')|join] }}",
])
def test_obfuscation_is_reported(template: str) -> None:
    assert check_template(template), template


def test_gguf_with_real_template_passes(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_bytes(_gguf([_kv_string("general.architecture", "llama"),
                         ("general.alignment", 4, struct.pack("<I", 32)),
                         ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _s("a") + _s("b") + _s("c")),
                         ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0, 1, 2)),
                         _kv_string("tokenizer.chat_template", TEMPLATES["llama-3.1"])]))
    result = _scan(p)
    assert result.formats == ["gguf", "gguf-chat-template"]
    assert result.findings == []


def test_gguf_written_by_gguf_package(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    path = tmp_path / "written.gguf"

    def write(template: str) -> None:
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_chat_template(template)
        w.add_tensor("tok_embd.weight", np.ones((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    write(TEMPLATES["chatml"])
    assert _scan(path).findings == []
    write(PAYLOADS["cycler globals"])
    result = _scan(path)
    hits = [f for f in result.findings if f.rule_id == "chat-template-code"]
    assert hits and hits[0].details["key"] == "tokenizer.chat_template"
    assert hits[0].severity == Severity.CRITICAL


def test_gguf_named_template_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "model.gguf"
    p.write_bytes(_gguf([_kv_string("tokenizer.chat_template", TEMPLATES["chatml"]),
                         _kv_string("tokenizer.chat_template.tool_use", PAYLOADS["lipsum"])]))
    result = _scan(p)
    keys = {f.details["key"] for f in result.findings}
    assert keys == {"tokenizer.chat_template.tool_use"}
    assert all(f.offset and f.offset > 24 for f in result.findings)


def test_gguf_huge_array_is_a_finding_not_a_hang(tmp_path: Path) -> None:
    p = tmp_path / "evil.gguf"
    p.write_bytes(_gguf([("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 1 << 63) + _s("a"))]))
    start = time.monotonic()
    result = _scan(p)
    assert time.monotonic() - start < 5
    assert [f.rule_id for f in result.findings] == ["gguf-invalid-header"]
    assert "claims 9223372036854775808 entries" in result.findings[0].message


@pytest.mark.parametrize("blob,why", [
    (_gguf([], claimed_kv=1 << 40), "metadata count"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62), "bytes"),
    (_gguf([("x", 99, b"")]), "unknown value type 99"),
    (_gguf([], tensors=1, tensor_infos=_s("t") + struct.pack("<I", 9)), "dimensions"),
    (b"GGUF" + struct.pack("<I", 7) + b"\x00" * 16, "version 7"),
])
def test_gguf_invalid_headers(tmp_path: Path, blob: bytes, why: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    result = _scan(p)
    assert [f.rule_id for f in result.findings] == ["gguf-invalid-header"], result.findings
    assert why in result.findings[0].message


# ---- tokenizer_config.json and .jinja files ---------------------------------------------------

def test_tokenizer_config_chat_template(tmp_path: Path) -> None:
    p = tmp_path / "tokenizer_config.json"
    p.write_text(json.dumps({"bos_token": "<s>", "chat_template": TEMPLATES["mistral-v0.3"],
                             "model_max_length": 32768}))
    result = _scan(p)
    assert "tokenizer-config" in result.formats and result.findings == []
    p.write_text(json.dumps({"chat_template": [
        {"name": "default", "template": TEMPLATES["chatml"]},
        {"name": "rag", "template": PAYLOADS["attr filter with escapes"]}]}))
    result = _scan(p)
    assert result.findings and {f.details["key"] for f in result.findings} == {"chat_template.rag"}
    assert result.blocking(Severity.HIGH)


def test_chat_template_jinja_file(tmp_path: Path) -> None:
    p = tmp_path / "chat_template.jinja"
    p.write_text(TEMPLATES["llama-3.1"])
    result = _scan(p)
    assert result.formats == ["jinja-template", "chat-template"] and result.findings == []
    p.write_text(TEMPLATES["llama-3.1"].replace("{{- system_message }}",
                                                "{{- system_message }}" + PAYLOADS["joiner"]))
    hits = _scan(p).findings
    assert {h.rule_id for h in hits} == {"chat-template-code"}
    assert {h.details["key"] for h in hits} == {"chat_template.jinja"}
    assert any("joiner" in h.message for h in hits)


def test_ordinary_text_files_are_not_templates(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Model\n\nUse `{{ messages }}` in your template; avoid `{{ ''.__class__ }}`.\n")
    code = tmp_path / "train.py"
    code.write_text("template = f'{{x}} {y}'\nprint(template.__class__)\n")
    for path in (readme, code):
        result = _scan(path)
        assert result.formats == [] and result.findings == [], path


def test_helm_charts_and_data_keys() -> None:
    # A Helm chart's Go template is not Jinja, and is not read as a chat template (by its name);
    # Jinja data keys that are also Python words are chat data, calling them is not.
    assert check_template("{% if values.nodeSelector.os %}{{ values.system.name }}{% endif %}") == []
    assert check_template("{{ config.os.system('id') }}")

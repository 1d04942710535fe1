"""Chat templates: parsed by Jinja, judged allowlist first, and only where a loader renders them."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest
from chat_templates_data import PUBLISHED, PUBLISHED_SOURCES, TEMPLATES
from cputime import cpu_seconds

from safemodel_ci.cli import main
from safemodel_ci.context import ScanContext
from safemodel_ci.findings import Severity
from safemodel_ci.formats.chat_template import (
    check_template,
    python_attributes,
    rendered_as_chat_template,
    SAFE_FIELDS,
)
from safemodel_ci.policy import Policy
from safemodel_ci.scanner import ScanOptions, scan_file

ALL_PUBLISHED: Dict[str, str] = {**TEMPLATES, **PUBLISHED}

#: Template injection payloads: CVE-2024-34359's proof of concept, the usual Jinja SSTI chains, and
#: every way the issue names of hiding a name from a pattern check. Each must be CRITICAL.
CRITICAL_ATTACKS: Dict[str, str] = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "llama-cpp-python PoC (CVE-2024-34359)":
        "{% for x in ().__class__.__base__.__subclasses__() %}{% if \"warning\" in x.__name__ %}"
        "{{x()._module.__builtins__['__import__']('os').popen(\"touch /tmp/retr0reg\")}}"
        "{%endif%}{% endfor %}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "joiner": "{{ joiner.__init__.__globals__ }}",
    "attr filter with escapes": "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fbase\\x5f\\x5f') }}",
    "self context": "{{ self._TemplateReference__context }}",
    "config globals (Flask)": "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "request builtins (Flask)":
        "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "namespace globals": "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "unicode escapes in a key": "{{ messages['\\u005f\\u005fclass\\u005f\\u005f'] }}",
    "map attribute": "{{ messages|map(attribute='__class__')|list }}",
    "map with the attr filter": "{{ messages|map('attr', '__class__')|list }}",
    "selectattr dunder": "{{ messages|selectattr('__class__')|list }}",
    "sort attribute path": "{{ messages|sort(attribute='role.__class__') }}",
    "format field": "{{ '{0.__class__}'.format(messages) }}",
    "format_map field": "{{ '{x.__class__.__mro__}'.format_map(tools) }}",
    "format string built with ~": "{% set s = '{0.' ~ '__class__}' %}{{ s.format(messages) }}",
    "set block capture": "{% set x %}__class__{% endset %}{{ messages[x] }}",
    "set block with a filter": "{% set x | lower %}__CLASS__{% endset %}{{ messages[x] }}",
    "set block with newlines": "{% set x %}\n__class__\n{% endset %}{{ messages[x] }}",
    "~-built subscript": "{% set u = '_' * 2 %}{{ messages[u ~ 'class' ~ u] }}",
    "+-built subscript": "{{ messages['__cla' + 'ss__'] }}",
    "join-built subscript": "{{ messages[['_','_','class','_','_']|join] }}",
    "printf filter subscript": "{{ messages['%c%cclass%c%c'|format(95,95,95,95)] }}",
    "% operator subscript": "{{ messages['%c%cclass%c%c' % (95,95,95,95)] }}",
    "reverse subscript": "{{ messages['__ssalc__'|reverse] }}",
    "replace filter subscript": "{{ messages['XXclassXX'|replace('X','_')] }}",
    "replace method subscript": "{{ messages['XXclassXX'.replace('X','_')] }}",
    "string slice subscript": "{{ messages['a__class__b'[1:-1]] }}",
    "lower subscript": "{{ messages['__CLASS__'|lower] }}",
    "first of a tuple": "{{ messages[('__class__',)|first] }}",
    "last of a list": "{{ messages[['x','__class__']|last] }}",
    "random of a list": "{{ messages[['__class__', '__base__']|random] }}",
    "namespace attribute": "{% set ns = namespace(k='__class__') %}{{ messages[ns.k] }}",
    "namespace accumulated in a loop":
        "{% set ns = namespace(k='') %}{% for p in ['__cla', 'ss__'] %}{% set ns.k = ns.k ~ p %}{% endfor %}"
        "{{ messages[ns.k] }}",
    "loop over constants": "{% for c in ['__class__'] %}{{ messages[c] }}{% endfor %}",
    "dict items": "{% for k, v in {'a': '__class__'}.items() %}{{ messages[v] }}{% endfor %}",
    "dict get": "{{ messages[{'a': '__class__'}.get('a')] }}",
    "dict global": "{{ messages[dict(a='__class__')['a']] }}",
    "with block": "{% with a = '__class__' %}{{ messages[a] }}{% endwith %}",
    "macro argument": "{% macro m(k) %}{{ messages[k] }}{% endmacro %}{{ m('__class__') }}",
    "macro default": "{% macro m(k='__class__') %}{{ messages[k] }}{% endmacro %}{{ m() }}",
    "caller argument":
        "{% macro m() %}{{ caller('__class__') }}{% endmacro %}"
        "{% call(k) m() %}{{ messages[k] }}{% endcall %}",
    "loop.cycle": "{% for m in messages %}{{ m[loop.cycle('__class__', '__base__')] }}{% endfor %}",
    "'}}' inside brackets": "{{ messages['}}'] ~ lipsum.__globals__ }}",
    "'}}' closing a dict literal": "{{ {'a': {'b': 1}}.__class__ }}",
    "'}}' in a string": "{{ '}}' ~ ''.__class__ }}",
    "filter block with attr": "{% filter attr('__class__') %}x{% endfilter %}",
    "do statement": "{% do messages.__class__ %}",
    "generation block": "{% generation %}{{ ''.__class__ }}{% endgeneration %}",
    "generator frame": "{{ (messages|map('upper')).gi_frame.f_back.f_globals }}",
    "mro call": "{{ messages.mro() }}",
    "popen call": "{{ messages.popen('id') }}",
    "getattr call": "{{ tools.getattr('x') }}",
    "method called by key": "{{ messages['popen']('id') }}",
    "lipsum call": "{{ lipsum() }}",
    "self": "{{ self }}",
    "private name": "{{ _TemplateReference__context }}",
    "strftime_now without directives": "{{ messages[strftime_now('__class__')] }}",
    "printf over a list": "{{ messages['%s' % ['__class__']|first] }}",
    "loop.previtem": "{% for k in ['a', '__class__'] %}{{ messages[loop.previtem] }}{% endfor %}",
}

#: Not CRITICAL on their own, but outside what chat templates do: each must be HIGH.
HIGH_ATTACKS: Dict[str, str] = {
    "characters from a repr": "{{ messages[(range|string)[10] * 2 ~ 'class' ~ (range|string)[10] * 2] }}",
    "only characters from reprs":
        "{{ x[(range|string)[14] * 2 ~ (dict|string)[1:6] ~ (range|string)[14] * 2] }}",
    "characters of the data joined": "{{ x[[(messages|string)[3], (messages|string)[3]]|join] }}",
    "characters of the data formatted": "{{ x['%s%s' % ((tools|string)[3], (tools|string)[3])] }}",
    "characters of a generator's repr": "{{ x[(messages|select|string)[20:29]] }}",
    "text appended to the data": "{% do messages.append('__class__') %}{{ x[messages|last] }}",
    "text appended to a namespace list":
        "{% set ns = namespace(l=[]) %}{% do ns.l.append('__cla' ~ 'ss__') %}{{ x[ns.l[0]] }}",
    "the loop object as text": "{% for m in messages %}{{ x[loop|string] }}{% endfor %}",
    "key built from data": "{{ messages[messages[0].content ~ 'x'] }}",
    "unknown filter": "{{ messages|evil }}",
    "unknown test": "{{ messages is evil }}",
    "unknown global call": "{{ evil() }}",
    "unknown method call": "{{ messages[0].content.encode() }}",
    "python attribute": "{{ messages.environment }}",
    "Flask global": "{{ url_for('x') }}",
    "include": "{% include 'other.jinja' %}",
    "import": "{% import 'other.jinja' as o %}",
    "extends": "{% extends 'base.jinja' %}",
    "attr as a test": "{{ messages|select('attr') }}",
    "filter name built at render time": "{{ messages|map(messages[0].role ~ 'x')|list }}",
    "format string from data": "{{ messages[0].content.format(tools) }}",
    "varargs": "{% macro m() %}{{ messages[varargs[0]] }}{% endmacro %}{{ m('__class__') }}",
    "call of a variable": "{% set f = messages.pop %}{{ f() }}",
    "private loop attribute": "{% for m in messages %}{{ loop._iterator }}{% endfor %}",
    "unknown loop attribute": "{% for m in messages %}{{ loop.environment }}{% endfor %}",
}

#: Issue 16's list of families that must pass, and the published templates that stand for them.
FAMILIES = {
    "Qwen 2": ["qwen-qwen1.5-72b-chat", "axolotl-qwen2-vl"],
    "Qwen 2.5": ["qwen-qwen2.5-7b-instruct", "qwen-qwen2.5-vl-7b-instruct", "axolotl-qwen-25"],
    "Qwen 3": ["qwen-qwen3-0.6b", "qwen-qwen3.5-4b", "axolotl-qwen3", "axolotl-qwen3-5"],
    "Phi-3": ["axolotl-phi-3", "axolotl-phi-35"],
    "Phi-4": ["axolotl-phi-4"],
    "Llama 3.1/3.3": ["meta-llama-llama-3.1-8b-instruct"],
    "Llama 3.2": ["meta-llama-llama-3.2-11b-vision-instruct", "meta-llama-llama-guard-3-11b-vision",
                  "axolotl-llama3-2-vision"],
    "Llama 4": ["axolotl-llama4"],
    "Mistral Nemo": ["mistralai-mistral-nemo-instruct-2407", "axolotl-mistral-v3-tekken"],
    "Mistral Large": ["axolotl-mistral-v7-tekken"],
    "Mistral tool use": ["mistralai-mistral-7b-instruct-v0.3-tool-use-json-schema",
                         "ciscai-mistral-7b-instruct-v0.3-sota-gguf-gguf-metadata"],
    "Gemma 2": ["axolotl-gemma"],
    "Gemma 3": ["axolotl-gemma3", "axolotl-gemma3n"],
    "DeepSeek V3": ["axolotl-deepseek-v3"],
    "DeepSeek R1": ["deepseek-ai-deepseek-r1"],
    "Command-R": ["cohereforai-c4ai-command-r-v01-default", "cohereforai-c4ai-command-r-v01-tool-use"],
    "Granite": ["axolotl-granite", "axolotl-granitemoe"],
    "OLMo": ["open-instruct-tulu", "open-instruct-olmo", "open-instruct-olmo-thinker"],
    "SmolLM": ["huggingfacetb-smollm3-3b", "huggingfacetb-smolvlm-instruct"],
    "Zephyr": ["huggingfaceh4-zephyr-7b-beta", "huggingfaceh4-zephyr-7b-gemma-v0.1", "open-instruct-zephyr"],
}


def _scan(path: Path):
    return scan_file(str(path), ScanOptions())


def _rules(template: str) -> List[str]:
    return sorted({i.rule_id for i in check_template(template)})


# ---- the published templates pass ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL_PUBLISHED))
def test_published_template_passes(name: str) -> None:
    assert check_template(ALL_PUBLISHED[name]) == [], name


def test_the_issue_s_families_are_covered() -> None:
    assert len(PUBLISHED) >= 30 + len(TEMPLATES)
    for family, names in FAMILIES.items():
        for name in names:
            assert name in PUBLISHED, (family, name)
    for name, source in PUBLISHED_SOURCES.items():
        assert source["model"] and source["source"] and "@" in source["source"], name


def test_published_templates_pass_as_the_files_loaders_read(tmp_path: Path) -> None:
    """Each one as chat_template.jinja, inside tokenizer_config.json and in a chat_template list."""
    for i, (name, template) in enumerate(sorted(ALL_PUBLISHED.items())):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "chat_template.jinja").write_bytes(template.encode("utf-8"))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"chat_template": [{"name": "default", "template": template}], "bos_token": "<s>"}))
        for file in ("chat_template.jinja", "tokenizer_config.json"):
            result = _scan(folder / file)
            assert result.findings == [], (name, file, result.findings)
        assert "chat-template" in _scan(folder / "chat_template.jinja").formats


# ---- the attacks do not ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CRITICAL_ATTACKS))
def test_attack_is_critical(name: str) -> None:
    issues = check_template(CRITICAL_ATTACKS[name])
    assert any(i.rule_id == "chat-template-code" for i in issues), (name, issues)


@pytest.mark.parametrize("name", sorted(HIGH_ATTACKS))
def test_attack_is_high(name: str) -> None:
    rules = _rules(HIGH_ATTACKS[name])
    assert rules and set(rules) <= {"chat-template-unknown-name", "chat-template-suspicious",
                                    "chat-template-code"}, (name, rules)


def test_attacks_hidden_in_a_published_template_are_found() -> None:
    """The payload inside a real template, where the other tags are ordinary."""
    base = TEMPLATES["llama-3.1"]
    for name, payload in CRITICAL_ATTACKS.items():
        hostile = base.replace("{{- system_message }}", "{{- system_message }}" + payload, 1)
        assert "chat-template-code" in _rules(hostile), name


def test_finding_names_the_line() -> None:
    template = TEMPLATES["llama-3.1"].replace("{{- system_message }}", "{{- system_message.__class__ }}")
    [issue] = check_template(template)
    assert issue.rule_id == "chat-template-code" and "__class__" in issue.what
    assert template.splitlines()[issue.line - 1].strip() == issue.snippet


def test_raw_blocks_and_comments_are_text() -> None:
    assert check_template("{% raw %}{{ ''.__class__ }}{% endraw %}{# {{ lipsum }} #}hello") == []


def test_data_keys_pass_and_python_attributes_do_not() -> None:
    assert check_template("{{ message.reasoning_content }}{{ tool.function.parameters.properties }}"
                          "{{ message['tool_calls'][0].id }}{{ ns.whatever }}") == []
    assert "name" in SAFE_FIELDS and "name" in python_attributes()
    assert _rules("{{ message.globals }}") == ["chat-template-unknown-name"]
    # names of Jinja's objects that are also plain data fields: only CRITICAL names reach the objects
    assert check_template("{{ document.filename }}{{ message.parent }}{{ image.shape }}") == []
    assert _rules("{{ message.content.data() }}") == ["chat-template-unknown-name"]


def test_unparsable_template_is_not_reported_clean() -> None:
    issues = check_template("{% for m in messages %}{{ m.content }")
    assert [i.rule_id for i in issues] == ["unscanned-parse-error"]


# ---- where templates are judged ----------------------------------------------------------------

FLASK_PAGE = ("{% extends 'base.html' %}{% block content %}<a href=\"{{ url_for('index') }}\">"
              "{{ cycler('odd', 'even').next() }}</a>{{ self.title() }}{% endblock %}")
ANSIBLE = "[defaults]\nhost = {{ inventory_hostname }}\n{{ lookup('env', 'HOME') | attr('upper') }}\n"
CYTHON_TP = ("{{py: types = ['int', 'float']}}\n{{for t in types}}\ncdef {{t}} f_{{t}}(x): return x\n"
             "{{endfor}}\n")


@pytest.mark.parametrize("name,text", [("templates/page.html", FLASK_PAGE),
                                       ("roles/x/templates/a.cfg.j2", ANSIBLE),
                                       ("src/_helpers.pyx.tp", CYTHON_TP),
                                       ("docs/layout.jinja", FLASK_PAGE)])
def test_other_jinja_files_get_no_finding(tmp_path: Path, name: str, text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = _scan(path)
    assert result.findings == [], result.findings
    assert main(["scan", "--no-cache", str(path)]) == 0


def test_chat_template_jinja_is_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chat_template.jinja"
    path.write_text(FLASK_PAGE)
    rules = {f.rule_id for f in _scan(path).findings}
    assert rules == {"chat-template-code", "chat-template-unknown-name", "chat-template-suspicious"}
    assert main(["scan", "--no-cache", str(path)]) == 1
    path.write_text(TEMPLATES["chatml"])
    assert main(["scan", "--no-cache", str(path)]) == 0


def test_jinja_beside_a_tokenizer_config_is_judged(tmp_path: Path) -> None:
    template = tmp_path / "tool_use.jinja"
    template.write_text(CRITICAL_ATTACKS["cycler globals"])
    assert _scan(template).findings == []
    for config in ("tokenizer_config.json", "processor_config.json", "chat_template.json"):
        (tmp_path / config).write_text("{}")
        findings = _scan(template).findings
        assert findings and findings[0].severity == Severity.CRITICAL, config
        assert findings[0].details["key"] == "tool_use.jinja"
        (tmp_path / config).unlink()


def test_additional_chat_templates_folder_is_judged(tmp_path: Path) -> None:
    folder = tmp_path / "additional_chat_templates"
    folder.mkdir()
    (folder / "rag.jinja").write_text(CRITICAL_ATTACKS["set block capture"])
    assert {f.rule_id for f in _scan(folder / "rag.jinja").findings} == {"chat-template-code"}


def test_location_from_hub_and_archive_display_paths() -> None:
    def ctx(path: str, member: str = "") -> ScanContext:
        c = ScanContext(path, Policy())
        return c.child(member) if member else c

    assert rendered_as_chat_template(ctx("org/model@0123abcd:additional_chat_templates/rag.jinja"))
    assert rendered_as_chat_template(ctx("org/model@0123abcd:sub/chat_template.jinja"))
    assert rendered_as_chat_template(ctx("bundle.tar", "model/Chat_Template.jinja"))
    assert not rendered_as_chat_template(ctx("org/model@0123abcd:docs/page.jinja"))


def test_template_in_an_archive_is_judged(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (("model/chat_template.jinja", CRITICAL_ATTACKS["lipsum"]),
                           ("model/site/page.jinja", FLASK_PAGE)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "bundle.tar"
    path.write_bytes(buf.getvalue())
    findings = _scan(path).findings
    assert findings and {f.member for f in findings} == {"model/chat_template.jinja"}


def test_detection_by_name_is_not_reused_for_other_names(tmp_path: Path) -> None:
    """The same short bytes under a name that is not a template, then under one that is."""
    payload = CRITICAL_ATTACKS["cycler globals"]
    assert len(payload.encode()) <= 64
    (tmp_path / "notes.txt").write_text(payload)
    assert _scan(tmp_path / "notes.txt").findings == []
    (tmp_path / "chat_template.jinja").write_text(payload)
    assert _scan(tmp_path / "chat_template.jinja").findings


def test_a_nul_byte_does_not_hide_a_template(tmp_path: Path) -> None:
    path = tmp_path / "chat_template.jinja"
    path.write_bytes(b"{# \x00 #}" + CRITICAL_ATTACKS["lipsum"].encode())
    assert "chat-template-code" in {f.rule_id for f in _scan(path).findings}


def test_unparsable_chat_template_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chat_template.jinja"
    path.write_text("{% for m in messages %}{{ m.content }")
    assert [f.rule_id for f in _scan(path).findings] == ["unscanned-parse-error"]
    assert main(["scan", "--no-cache", str(path)]) == 2


def test_json_templates_are_judged_only_in_loader_files(tmp_path: Path) -> None:
    doc = json.dumps({"chat_template": CRITICAL_ATTACKS["joiner"]})
    for name in ("tokenizer_config.json", "chat_template.json", "processor_config.json"):
        (tmp_path / name).write_text(doc)
        assert {f.rule_id for f in _scan(tmp_path / name).findings} == {"chat-template-code"}, name
    (tmp_path / "eval_prompts.json").write_text(doc)
    assert _scan(tmp_path / "eval_prompts.json").findings == []


def test_gguf_named_templates(tmp_path: Path) -> None:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kv = [("tokenizer.chat_template", PUBLISHED["qwen-qwen3-0.6b"]),
          ("tokenizer.chat_template.tool_use", PUBLISHED["cohereforai-c4ai-command-r-v01-tool-use"]),
          ("tokenizer.chat_template.rag", CRITICAL_ATTACKS["'}}' inside brackets"])]
    blob = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv:
        blob += s(key) + struct.pack("<I", 8) + s(value)
    path = tmp_path / "model.gguf"
    path.write_bytes(blob)
    findings = _scan(path).findings
    assert {f.details["key"] for f in findings} == {"tokenizer.chat_template.rag"}
    assert {f.rule_id for f in findings} == {"chat-template-code"}


# ---- bounded work -------------------------------------------------------------------------------

COSTLY = {
    "lists of lists": "{% set a = 'x' * 4096 %}{% set b = [a] * 4096 %}{% set c = [b] * 4096 %}"
                      "{% set d = [c] * 4096 %}{{ x[d|join] }}{{ x[d|string] }}",
    "replace that multiplies": "{% set a = 'a' * 4096 %}{{ x[a.replace('a', a)] }}{{ x[a|replace('a', a)] }}",
    "power tower": "{% set n = 10 ** 63 %}{% set m = n ** 63 %}{% set o = m ** 63 %}{{ x[o|string] }}",
    "huge printf width": "{{ x['%999999999s'|format('a')] }}",
    "huge format width": "{{ x['{:999999999}'.format('a')] }}",
    "assignment chain longer than the rounds":
        "".join("{%% set a%d = a%d ~ 'x' %%}" % (i, i + 1) for i in range(300))
        + "{% set a300 = '_' %}{{ x[a0] }}",
}


@pytest.mark.parametrize("name", sorted(COSTLY))
def test_costly_templates_are_judged_quickly(name: str) -> None:
    """Folding is bounded (sizes, integer bits, rounds): what it gives up on is 'built at render
    time', never a pass and never a hang."""
    start = cpu_seconds()
    rules = _rules(COSTLY[name])
    assert cpu_seconds() - start < 2.0
    assert rules == ["chat-template-suspicious"], rules


def test_published_corpus_cpu_time() -> None:
    start = cpu_seconds()
    for template in ALL_PUBLISHED.values():
        check_template(template)
    assert cpu_seconds() - start < 10.0  # about 0.6 s on the development machine

"""Jinja chat templates: the check shared by GGUF metadata, ``tokenizer_config.json`` and
``chat_template.jinja`` files, and the reader for the latter.

A chat template is a Jinja program. Rendered by a plain ``jinja2.Environment`` (llama-cpp-python
before 0.2.72, CVE-2024-34359; similar bugs in vLLM and SGLang) it reaches Python through
attribute access: ``''.__class__.__mro__[1].__subclasses__()``, ``cycler.__init__.__globals__.os``,
``lipsum.__globals__['__builtins__']``, spelled with ``|attr`` or ``\\x5f`` escapes to dodge
filters. Ordinary templates only index messages, loop, test and concatenate strings, so:

- CRITICAL (``chat-template-code``): dunder names, escaped underscores, the ``attr`` filter, the
  globals ``cycler``/``joiner``/``lipsum``/``self``, and attribute access or calls to process,
  import and introspection names (``.popen``, ``os.``, ``.mro``, ``getattr(`` ...);
- HIGH (``chat-template-suspicious``): names computed inside subscripts (``x[a ~ b]``), attribute
  arguments that are not literals, ``'%c'`` formatting, literals made to build dunders (``'__'``),
  and ``include``/``import``/``extends`` of other templates.

Only what is inside ``{{ }}`` and ``{% %}`` tags is code; text around tags (and ``{% raw %}``
blocks, and comments) is output verbatim and is not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

from ..context import ScanContext
from ..source import ByteSource
from .interface import FormatReader

#: Template text kept in memory at most (larger templates are reported, not scanned).
MAX_TEMPLATE = 16 << 20

_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DUNDER = re.compile(r"__\w+__")
_ESCAPED_UNDERSCORE = re.compile(r"\\(?:x5[fF]|u005[fF]|U0000005[fF]|137|N\{LOW LINE\})")
_ATTR_FILTER = re.compile(r"\|\s*attr\b")
_EXPR_STOP = re.compile(r"['\"]|\}\}")
_STMT_STOP = re.compile(r"['\"]|%\}")
_RAW_END = re.compile(r"\{%[-+]?\s*endraw\s*[-+]?%\}")
#: Jinja globals whose ``__init__.__globals__`` lead to modules; no chat template needs them.
_BAD_GLOBALS = frozenset({"cycler", "joiner", "lipsum", "self", "url_for", "get_flashed_messages"})
#: Names reached by attribute access or calls in template injection payloads.
_BAD_ATTRIBUTES = frozenset({
    "popen", "subprocess", "os", "system", "eval", "exec", "getattr", "setattr", "import_module",
    "importlib", "builtins", "globals", "locals", "mro", "subclasses", "func_globals", "f_globals",
    "f_locals", "f_back", "gi_frame", "gi_code", "cr_frame", "tb_frame", "co_code", "environ",
    "check_output", "spawn", "load_module", "get_data",
})
#: Of those, words that are also plausible data keys (``.Values.os`` in a Helm chart): flagged only
#: when called (``.system(``) or used as a bare module name (``os.popen``).
_COMMON_WORDS = frozenset({"os", "system", "environ", "spawn"})
#: String literals that name such attributes when used as keys or attr() arguments.
_BAD_LITERALS = frozenset(_BAD_ATTRIBUTES - {"os", "system", "environ"})
_STRING_BUILDERS = re.compile(r"~|\|\s*(?:join|format|replace|reverse|string|lower|upper|title|"
                              r"capitalize|trim|first|last)\b|%|\+")
_ATTRIBUTE_ARG = re.compile(r"(?:\battribute\s*=|\b(?:selectattr|rejectattr|map)\s*\()\s*(?!'')(?!\))")
_INCLUDE = re.compile(r"^[-+]?\s*(include|import|extends|from)\b")


@dataclass(frozen=True)
class TemplateIssue:
    rule_id: str
    what: str
    #: Character offset of the tag in the template.
    position: int
    snippet: str


def iter_tags(text: str) -> Iterator[Tuple[int, str, str]]:
    """(position, "{{" or "{%", content) for every expression and statement tag; strings inside a
    tag may contain ``}}`` without closing it. Comments and raw blocks are skipped."""
    i = 0
    n = len(text)
    while i < n:
        j = text.find("{", i)
        if j < 0 or j + 1 >= n:
            return
        opener = text[j:j + 2]
        if opener == "{#":
            end = text.find("#}", j + 2)
            i = n if end < 0 else end + 2
            continue
        if opener not in ("{{", "{%"):
            i = j + 1
            continue
        stop = _EXPR_STOP if opener == "{{" else _STMT_STOP
        k = j + 2
        while True:
            m = stop.search(text, k)
            if m is None:
                k = n
                break
            if m.group() in ("}}", "%}"):
                k = m.start()
                break
            string = _STRING.match(text, m.start())
            k = string.end() if string else n
        content = text[j + 2:k]
        yield j, opener, content
        i = k + 2
        if opener == "{%" and re.match(r"^[-+]?\s*raw\s*[-+]?$", content):
            m = _RAW_END.search(text, i)
            i = n if m is None else m.end()


def _previous_char(content: str, pos: int) -> str:
    k = pos - 1
    while k >= 0 and content[k].isspace():
        k -= 1
    return content[k] if k >= 0 else ""


def _brackets(skeleton: str) -> List[str]:
    """Contents of innermost ``[...]`` groups of a tag's code."""
    return re.findall(r"\[([^\[\]]*)\]", skeleton)


def check_template(text: str) -> List[TemplateIssue]:
    """Every reason to distrust a template (empty for ordinary chat templates)."""
    issues: List[TemplateIssue] = []

    def add(rule: str, what: str, pos: int, content: str) -> None:
        issues.append(TemplateIssue(rule, what, pos, ("{" + content.strip() + "}")[:160]))

    for pos, opener, content in iter_tags(text):
        literals = list(_STRING.finditer(content))
        skeleton = _STRING.sub("''", content)
        m = _DUNDER.search(content)
        if m:
            add("chat-template-code", f"dunder name {m.group()!r}", pos, content)
        m = _ESCAPED_UNDERSCORE.search(content)
        if m:
            add("chat-template-code", f"escaped underscore {m.group()!r}", pos, content)
        if _ATTR_FILTER.search(skeleton):
            add("chat-template-code", "the attr filter", pos, content)
        for t in _IDENT.finditer(skeleton):
            word = t.group()
            before = _previous_char(skeleton, t.start())
            after = skeleton[t.end():t.end() + 1]
            if word in _BAD_GLOBALS and before != ".":
                add("chat-template-code", f"the Jinja global {word!r}", pos, content)
            elif word in _COMMON_WORDS and (after == "(" or (after == "." and before != ".")):
                add("chat-template-code", f"access to {word!r}", pos, content)
            elif word in _BAD_ATTRIBUTES and word not in _COMMON_WORDS and (
                    before == "." or after in (".", "(")):
                add("chat-template-code", f"access to {word!r}", pos, content)
            elif (word.startswith("__") and not word.endswith("__")) or word.startswith("_TemplateReference"):
                add("chat-template-code", f"private name {word!r}", pos, content)
        for lit in literals:
            value = lit.group()[1:-1]
            if value in _BAD_LITERALS and _previous_char(content, lit.start()) in "[(=,":
                add("chat-template-code", f"the name {value!r} used as a key or attribute", pos, content)
            elif value.startswith("__") or value.endswith("__") or re.fullmatch(r"_+", value or "x"):
                if value != "_":
                    add("chat-template-suspicious", f"a literal {value!r} for building dunder names",
                        pos, content)
            elif value == "%c" or value.startswith("%c"):
                add("chat-template-suspicious", "character formatting ('%c')", pos, content)
        for inner in _brackets(skeleton):
            if _STRING_BUILDERS.search(inner) and "''" in inner:
                add("chat-template-suspicious", f"a key computed from strings [{inner.strip()}]",
                    pos, content)
            elif re.search(r"~|\|\s*(?:join|format|replace|reverse)\b", inner):
                add("chat-template-suspicious", f"a key computed at render time [{inner.strip()}]",
                    pos, content)
        if _ATTRIBUTE_ARG.search(skeleton):
            add("chat-template-suspicious", "an attribute name that is not a literal", pos, content)
        if opener == "{%" and _INCLUDE.match(content):
            add("chat-template-suspicious", f"'{_INCLUDE.match(content).group(1)}' of another template",  # type: ignore[union-attr]
                pos, content)
    # One finding per rule and reason is enough; keep the first place each occurs.
    unique: List[TemplateIssue] = []
    seen = set()
    for issue in issues:
        key = (issue.rule_id, issue.what)
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    return unique


def report_template(text: str, ctx: ScanContext, key: str, offset: Optional[int] = None) -> int:
    """Check one template and report its issues (``key`` names where it came from). Returns the count."""
    issues = check_template(text)
    for issue in issues[:50]:
        ctx.report(issue.rule_id,
                   f"chat template {key!r} uses {issue.what} (character {issue.position}: {issue.snippet})",
                   offset=offset, details={"key": key, "template_offset": issue.position,
                                           "snippet": issue.snippet})
    return len(issues)


def check_chat_template_value(value: Any, ctx: ScanContext, key: str = "chat_template",
                              offset: Optional[int] = None) -> None:
    """``chat_template`` as transformers stores it: a string, or a list of ``{name, template}``."""
    if isinstance(value, str):
        report_template(value, ctx, key, offset)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name") if isinstance(item.get("name"), str) else str(i)
                report_template(item["template"], ctx, f"{key}.{name}", offset)
    elif isinstance(value, dict):
        for name, template in value.items():
            if isinstance(template, str):
                report_template(template, ctx, f"{key}.{name}", offset)


# ---- .jinja files -----------------------------------------------------------------------------

_STATEMENT = re.compile(rb"\{%-?\s*(?:for|if|set|macro|raw|include|import|extends|from|filter|call|block)\b")
_MESSAGES_LOOP = re.compile(rb"\{%-?\s*for\s+\w+\s+in\s+(?:loop_)?messages\b")


def looks_like_template(head: bytes) -> bool:
    """A text file that *is* a Jinja template: it starts with a tag, or loops over messages.

    Markdown or code that merely mentions ``{{`` is not claimed: the first non-blank bytes must be a
    Jinja delimiter, or a ``{% for ... in messages %}`` loop (a chat template with leading text).
    """
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut by the 4 KiB head is fine
            return False
    body = head.lstrip(b" \t\r\n\xef\xbb\xbf")
    if body.startswith(b"{{") or body.startswith(b"{#"):
        return True
    if body.startswith(b"{%"):
        return _STATEMENT.match(body) is not None
    if body.startswith(b"{") or body.startswith(b"["):
        return False  # JSON (tokenizer_config.json holds templates too; the JSON reader checks them)
    return _MESSAGES_LOOP.search(head) is not None


class JinjaTemplateReader(FormatReader):
    """``chat_template.jinja`` and other standalone Jinja chat templates."""

    name = "jinja-template"

    def detect(self, source: ByteSource, head: bytes) -> bool:
        return looks_like_template(head)

    def scan(self, source: ByteSource, ctx: ScanContext) -> None:
        if source.size > MAX_TEMPLATE:
            ctx.report("unscanned-limit", f"template of {source.size} bytes exceeds the {MAX_TEMPLATE}-byte "
                       "template limit", details={"limit": "template"})
            return
        text = source.read_exact(0, source.size).decode("utf-8", "replace")
        report_template(text, ctx, ctx.basename)

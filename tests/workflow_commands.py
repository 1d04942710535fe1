"""What the GitHub Actions runner would take from a step's output: a test model of its parser.

Mirrors actions/runner ``src/Runner.Common/ActionCommand.cs`` and
``src/Runner.Worker/ActionCommandManager.cs``: every output line is tried as a ``::name
props::data`` command (after leading whitespace is trimmed), then as a legacy ``##[name props]data``
command found ANYWHERE in the line; ``stop-commands`` suspends processing until a line names its
token. Unlike the runner, every command name counts as registered (stricter for the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class Command:
    name: str
    properties: Dict[str, str] = field(default_factory=dict)
    data: str = ""
    line: str = ""


def _unescape_data(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(s: str) -> str:
    return (s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",")
            .replace("%25", "%"))


def _unescape_legacy(s: str) -> str:
    return (s.replace("%3B", ";").replace("%0D", "\r").replace("%0A", "\n").replace("%5D", "]")
            .replace("%25", "%"))


def parse_v2(line: str) -> Optional[Command]:
    message = line.lstrip()
    if not message.startswith("::"):
        return None
    end = message.find("::", 2)
    if end < 0:
        return None
    info = message[2:end]
    space = info.find(" ")
    name = info if space < 0 else info[:space]
    if not name:
        return None
    cmd = Command(name, line=line)
    if space > 0:
        for prop in (p for p in info[space + 1:].strip().split(",") if p):
            pair = [x for x in prop.split("=", 1) if x]
            if len(pair) == 2:
                cmd.properties[pair[0]] = _unescape_property(pair[1])
    cmd.data = _unescape_data(message[end + 2:])
    return cmd


def parse_v1(line: str) -> Optional[Command]:
    start = line.find("##[")
    if start < 0:
        return None
    close = line.find("]", start)
    if close < 0:
        return None
    info = line[start + 3:close]
    space = info.find(" ")
    name = info if space < 0 else info[:space]
    if not name:
        return None
    cmd = Command(name, line=line)
    if space > 0:
        for prop in (p for p in info[space + 1:].split(";") if p):
            pair = [x for x in prop.split("=", 1) if x]
            if len(pair) == 2:
                cmd.properties[pair[0]] = _unescape_legacy(pair[1])
    cmd.data = _unescape_legacy(line[close + 1:])
    return cmd


def process(output: str) -> List[Command]:
    """The commands the runner would act on, in order (stop/resume markers included)."""
    commands: List[Command] = []
    stop_token: Optional[str] = None
    # The runner reads lines with StreamReader.ReadLine: CR, LF and CRLF all end a line.
    for line in re.split(r"\r\n|\r|\n", output):
        cmd = parse_v2(line) or parse_v1(line)
        if cmd is None:
            continue
        if stop_token is not None:
            if cmd.name.lower() == stop_token.lower():
                commands.append(cmd)
                stop_token = None
            continue
        if cmd.name.lower() == "stop-commands":
            stop_token = cmd.data
        commands.append(cmd)
    return commands

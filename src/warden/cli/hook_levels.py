"""Risk levels of a coding agent's own tools (issue 17), for ``warden hook``: reading
is 1, fetching from the web 2, editing files 3; a shell command is judged by what it
does: read-only commands 2 (every part of a pipeline or compound command must be
read-only, and a ``>`` redirection makes it a write), anything else 3, destructive
ones 4. A mapping file (TOML or JSON: ``{tools = {Name = level}, readonly = [...],
destructive = [regex, ...]}``) adds to or overrides these."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TOOL_LEVELS: dict[str, int] = {
    "Read": 1, "Grep": 1, "Glob": 1, "LS": 1, "WebSearch": 1, "TodoWrite": 1, "TodoRead": 1,
    "NotebookRead": 1, "BashOutput": 1, "ExitPlanMode": 1, "Task": 2, "WebFetch": 2,
    "Edit": 3, "Write": 3, "MultiEdit": 3, "NotebookEdit": 3, "KillShell": 3,
}
UNKNOWN_TOOL_LEVEL = 3

READONLY_COMMANDS = frozenset({
    "ls", "cat", "head", "tail", "grep", "rg", "egrep", "fgrep", "find", "pwd", "echo", "wc", "sort",
    "uniq", "cut", "tr", "diff", "file", "stat", "which", "whoami", "date", "env", "printenv", "du",
    "df", "tree", "less", "more", "true", "false", "test", "[", "basename", "dirname", "realpath",
    "readlink", "id", "uname", "hostname", "jq", "sha256sum", "md5sum", "nl", "column", "awk", "sed",
})
READONLY_GIT = frozenset({"status", "log", "diff", "show", "branch", "blame", "rev-parse", "ls-files",
                          "describe", "remote", "tag", "shortlog"})
DESTRUCTIVE_PATTERNS = (
    r"\brm\s+(-[a-zA-Z]*[rf][a-zA-Z]*\s+)+", r"\bsudo\b", r"\bgit\s+push\b.*(--force\b|\s-f\b)",
    r"\bgit\s+reset\s+--hard\b", r"\bgit\s+clean\s+-[a-zA-Z]*f", r"\b(curl|wget)\b[^|]*\|\s*(ba|z)?sh\b",
    r"\bmkfs\b", r"\bdd\s+.*\bof=", r"\bchmod\s+-R\b", r"\bchown\s+-R\b", r":\(\)\s*\{", r">\s*/dev/sd",
    r"\bshutdown\b", r"\breboot\b",
)
# sed -i and find -exec/-delete write although their command is "read-only"
_WRITING_FLAGS = {"sed": ("-i", "--in-place"), "find": ("-delete", "-exec", "-execdir", "-ok"),
                  "awk": ("-i",)}
_SPLIT = re.compile(r"\|\||&&|[|;&\n]")


@dataclass(frozen=True)
class Levels:
    tools: dict[str, int] = field(default_factory=lambda: dict(TOOL_LEVELS))
    readonly: frozenset[str] = READONLY_COMMANDS
    destructive: tuple[str, ...] = DESTRUCTIVE_PATTERNS

    def of(self, tool: str, tool_input: object) -> int:
        if tool == "Bash":
            command = tool_input.get("command", "") if isinstance(tool_input, dict) else ""
            return self.of_command(str(command))
        return self.tools.get(tool, UNKNOWN_TOOL_LEVEL)

    def of_command(self, command: str) -> int:
        if any(re.search(p, command) for p in self.destructive):
            return 4
        if re.search(r"(?<![0-9&])>|>>|\$\(|`", command.replace("2>&1", "").replace("2>/dev/null", "")):
            return 3  # a redirection writes; a substitution runs a command we did not judge
        parts = [p.strip() for p in _SPLIT.split(command) if p.strip()]
        return 2 if parts and all(self._readonly(p) for p in parts) else 3

    def _readonly(self, part: str) -> bool:
        try:
            words = shlex.split(part)
        except ValueError:
            return False
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]  # FOO=bar cmd: the assignment itself is harmless
        if not words:
            return False
        name = words[0].rsplit("/", 1)[-1]
        if name == "git":
            sub = next((w for w in words[1:] if not w.startswith("-")), "")
            return sub in READONLY_GIT and not (sub in {"branch", "tag", "remote"} and len(words) > 2)
        if name not in self.readonly:
            return False
        return not any(w.startswith(f) for w in words[1:] for f in _WRITING_FLAGS.get(name, ()))


def load_levels(path: Path | None) -> Levels:
    """The defaults, with a mapping file's entries on top (a missing file is an error)."""
    if path is None:
        return Levels()
    raw = path.read_text()
    data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    tools = dict(TOOL_LEVELS)
    for name, level in (data.get("tools") or {}).items():
        if not isinstance(level, int) or not 1 <= level <= 4:
            raise ValueError(f"{path}: tools.{name}: a level is 1 to 4, not {level!r}")
        tools[str(name)] = level
    readonly = READONLY_COMMANDS | frozenset(str(c) for c in data.get("readonly") or ())
    readonly -= frozenset(str(c) for c in data.get("not_readonly") or ())
    destructive = DESTRUCTIVE_PATTERNS + tuple(str(p) for p in data.get("destructive") or ())
    return Levels(tools, readonly, destructive)

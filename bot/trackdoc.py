"""A track doc as data: its title, sections, the paths it allows and the gates it requires.

Pure: the caller reads the markdown (from the work tree or GitHub) and passes the text in.

Track docs are written by people, so parsing is tolerant: headings are matched
case-insensitively and by meaning ("What you're allowed to change", "Allowed changes",
"Scope"), and anything in the allowed section that does not look like a path is ignored
rather than refused.

Path patterns (``allowed``, and the paths of :mod:`bot.invariants`) are gitignore-like but
always anchored at the repository root: ``dir/`` (or ``dir``, or ``dir/**``) covers everything
below ``dir``; ``*`` and ``?`` stay within one path segment; ``**`` spans any number of
segments; anything else is an exact path. Unlike gitignore, a bare ``*.go`` matches only at
the top level: write ``**/*.go`` for every level.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from bot.knob import safe_repo_path
from bot.rules import Rules
from bot.runs import ChangedFile

GATE_KINDS = ("go-test", "compose", "script", "manual")


@dataclass(frozen=True)
class RequiredGate:
    """One bullet of the doc's required gates."""

    text: str
    commands: list[str]
    kind: str  # one of GATE_KINDS; "manual" when a person must do it (no command to run)
    line: int = field(default=0, compare=False)  # 1-based line of the doc where the bullet starts


@dataclass(frozen=True)
class DocLine:
    """One item (a bullet with its wrapped lines, or a paragraph) of a section, where the doc has it."""

    line: int  # 1-based
    text: str  # as written, whitespace folded


@dataclass(frozen=True)
class ComposeGate:
    """A Docker Compose smoke gate: bring the stack up, run the smoke commands, tear it down.

    `steps` is what runs between up and down, in the doc's order: each a command, or a bullet in
    words that asks for a script to run there ("Run local smoke script (documented entrypoint)"),
    which the gates fill with the script the change adds.
    """

    up: str
    smoke: list[str]
    down: str
    steps: list[SmokeStep] = field(default_factory=list, compare=False)


@dataclass(frozen=True)
class SmokeStep:
    """One step between compose up and down: a command of the doc, or a bullet asking for a script."""

    text: str  # the doc's bullet
    command: str | None = None  # None: the bullet asks for a script in words


@dataclass(frozen=True)
class TrackSpec:
    """What a track doc says, as data."""

    title: str | None
    allowed: list[str]
    required_gates: list[RequiredGate]
    compose: ComposeGate | None
    sections: dict[str, str] = field(default_factory=dict)
    # The items of the "allowed to change" section(s), prose included (bot.scope reads them).
    scope_lines: list[DocLine] = field(default_factory=list)


# --- markdown structure ---------------------------------------------------------------

_ATX_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A code span: a run of backticks, content, the same run again (CommonMark, simplified).
_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_BULLET_RE = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)(.*)$")


@dataclass(frozen=True)
class _Block:
    """A heading and the lines up to the next heading of any level."""

    level: int
    heading: str  # as written, without the #s
    key: str  # normalised, for matching by meaning
    start: int  # index of the first body line
    end: int  # index one past the last line of the whole section (subsections included)
    own_end: int  # index one past the last line before the next heading of any level


def _heading_key(heading: str) -> str:
    """Lower-case, without emphasis, numbering or trailing colons: what the heading means."""
    key = heading.lower().replace("\u2019", "'").replace("\u2018", "'")
    key = re.sub(r"[*_`]", "", key)
    key = re.sub(r"^\s*(?:\d+[.)]|[ivx]+\.)\s+", "", key)
    key = re.sub(r"\s+", " ", key).strip().rstrip(":").strip()
    return key


def _blocks(lines: list[str]) -> list[_Block]:
    """The headings of the doc (not those inside fenced code) with their line ranges."""
    found: list[tuple[int, int, str]] = []  # (line index, level, heading text)
    for index, line in _numbered_outside_fences(lines):
        heading_match = _ATX_HEADING_RE.match(line)
        if heading_match:
            text = re.sub(r"[ \t]+#+$", "", heading_match.group(2) or "").strip()
            found.append((index, len(heading_match.group(1)), text))
    blocks: list[_Block] = []
    for position, (index, level, text) in enumerate(found):
        own_end = found[position + 1][0] if position + 1 < len(found) else len(lines)
        end = len(lines)
        for later_index, later_level, _ in found[position + 1 :]:
            if later_level <= level:
                end = later_index
                break
        blocks.append(_Block(level, text, _heading_key(text), index + 1, end, own_end))
    return blocks


# Headings that say the opposite: "What you must NOT change", "Out of scope", "Non-goals".
_NEGATED_RE = re.compile(r"\b(?:not|never|forbidden|out of scope|off[- ]limits|non[- ]goals?)\b|n't\b")


def _is_allowed_heading(key: str) -> bool:
    """Whether a heading introduces what the track may change ("Scope", "Allowed changes", ...)."""
    if _NEGATED_RE.search(key):
        return False
    if "allowed" in key and re.search(r"\b(?:chang|edit|touch|modif|path|file|scope)", key):
        return True
    if re.search(r"\b(?:may|can) (?:change|edit|touch|modify)\b", key):
        return True
    return key.startswith("scope") or key in ("in scope", "files in scope", "paths in scope", "change scope")


def _is_gates_heading(key: str) -> bool:
    """Whether a heading introduces the required gates ("Required gates", "Gates", ...)."""
    if re.search(r"\b(?:not|non|optional)\b", key):
        return False
    return bool(re.search(r"\bgates?\b", key)) or key in ("required checks", "checks")


def _qualifying_numbered(
    lines: list[str], blocks: list[_Block], predicate: Callable[[str], bool]
) -> list[tuple[int, str]]:
    """Own lines of every block whose heading matches, or whose parent matches and is not negated.

    A subsection ("### Backend") under "## Allowed changes" belongs to it; a subsection that
    says the opposite ("### Not allowed") does not, so inheritance stops at headings that
    is not.
    """
    selected: list[tuple[int, str]] = []
    stack: list[tuple[int, bool]] = []  # (level, qualifies)
    for block in blocks:
        while stack and stack[-1][0] >= block.level:
            stack.pop()
        inherited = bool(stack) and stack[-1][1]
        negated = bool(_NEGATED_RE.search(block.key))
        qualifies = bool(predicate(block.key)) or (inherited and not negated)
        stack.append((block.level, qualifies))
        if qualifies:
            own = _numbered_outside_fences(lines[block.start : block.own_end])
            selected.extend((block.start + index, line) for index, line in own)
    return selected


def _numbered_outside_fences(lines: list[str]) -> list[tuple[int, str]]:
    """(index, line) of the lines that are not inside fenced code blocks (nor fences themselves)."""
    kept: list[tuple[int, str]] = []
    fence: str | None = None
    for index, line in enumerate(lines):
        fence_match = _FENCE_RE.match(line)
        if fence is not None:
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = None
            continue
        if fence_match:
            fence = fence_match.group(1)
            continue
        kept.append((index, line))
    return kept


def _outside_fences(lines: list[str]) -> list[str]:
    """The lines that are not inside fenced code blocks."""
    return [line for _index, line in _numbered_outside_fences(lines)]


def _code_spans(text: str) -> list[str]:
    """The contents of the inline code spans in `text`, stripped."""
    return [match.group(2).strip() for match in _CODE_SPAN_RE.finditer(text) if match.group(2).strip()]


# --- allowed paths ------------------------------------------------------------------------

_NOT_PATH_CHARS = set("(){}<>\"'=;|&$,:@!%^+#~")


def _as_pattern(candidate: str) -> str | None:
    """`candidate` as a normalised path pattern, or None if it is not a path (a command, code...)."""
    text = candidate.strip()
    if not text or any(ch.isspace() for ch in text) or any(ch in _NOT_PATH_CHARS for ch in text):
        return None
    # Go package patterns (`./internal/federation/...`) mean the folder and everything below.
    if text.endswith("/..."):
        text = text[: -len("...")]
    if text.startswith("/"):
        text = text.lstrip("/")
    directory = text.endswith("/")
    try:
        normalised = safe_repo_path(text)
    except ValueError:
        return None
    return normalised + "/" if directory else normalised


def _allowed_patterns(lines: list[str]) -> list[str]:
    patterns: list[str] = []
    for span in _code_spans("\n".join(lines)):
        pattern = _as_pattern(span)
        if pattern is not None and pattern not in patterns:
            patterns.append(pattern)
    return patterns


# --- gates ----------------------------------------------------------------------------------

_SCRIPT_SUFFIXES = (".sh", ".bash", ".py", ".ps1", ".pl", ".rb")
# Compose options that take a value, so that `-f up.yml` is never mistaken for the `up` command.
_COMPOSE_VALUE_OPTIONS = {
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--project-directory",
    "--env-file",
    "--profile",
    "--ansi",
    "--parallel",
    "--progress",
}


def _looks_like_command(span: str) -> bool:
    """Whether a code span in a gate bullet is something to run rather than a path it mentions."""
    if any(ch.isspace() for ch in span):
        return True
    if span.endswith("/"):
        return False
    if "/" in span and not span.startswith(("./", "../", "/")):
        # `deploy/compose/docker-compose.yml` is a file the bullet talks about; a script is still run.
        return span.endswith(_SCRIPT_SUFFIXES)
    return True


def compose_subcommand(command: str) -> str | None:
    """The Compose subcommand of `command` (`up`, `down`, `exec`...), or None if it is not Compose.

    Understands `docker compose` and `docker-compose`, leading `VAR=value` assignments and `sudo`,
    and Compose's global options (`-f FILE`, `-p NAME`...).
    """
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]) or words[0] == "sudo"):
        words = words[1:]
    if words[:2] == ["docker", "compose"]:
        rest = words[2:]
    elif words and words[0] == "docker-compose":
        rest = words[1:]
    else:
        return None
    skip_value = False
    for word in rest:
        if skip_value:
            skip_value = False
            continue
        if word.startswith("-"):
            skip_value = word in _COMPOSE_VALUE_OPTIONS
            continue
        return word
    return None


def _gate_kind(text: str, commands: list[str]) -> str:
    # A bullet labelled "Manual" is for a person even when it quotes a command to type.
    if not commands or re.match(r"^\W*manual(?:ly)?\b", text, re.IGNORECASE):
        return "manual"
    if any(compose_subcommand(command) is not None for command in commands):
        return "compose"
    if any(re.match(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*go\s+test\b", command) for command in commands):
        return "go-test"
    return "script"


def _items(numbered: list[tuple[int, str]]) -> list[DocLine]:
    """Top-level list items of (index, line) pairs, continuation lines joined; paragraphs if no list."""
    items: list[tuple[int, list[str]]] = []
    top_indent: int | None = None
    open_item = False
    previous_blank = False
    for index, line in numbered:
        if not line.strip():
            previous_blank = True
            continue
        bullet = _BULLET_RE.match(line)
        indent = len(line) - len(line.lstrip())
        if bullet and (top_indent is None or indent <= top_indent):
            top_indent = indent if top_indent is None else top_indent
            items.append((index, [bullet.group(2).strip()]))
            open_item = True
        elif open_item and (indent > (top_indent or 0) or not previous_blank):
            # Nested bullets and wrapped lines belong to the item above them.
            items[-1][1].append(line.strip())
        else:
            open_item = False
        previous_blank = False
    if top_indent is None:
        paragraphs: list[tuple[int, list[str]]] = []
        gap = True
        for index, line in numbered:
            if not line.strip():
                gap = True
                continue
            if gap:
                paragraphs.append((index, []))
                gap = False
            paragraphs[-1][1].append(line.strip())
        items = paragraphs
    return [DocLine(index + 1, " ".join(" ".join(parts).split())) for index, parts in items if any(parts)]


def _required_gates(numbered: list[tuple[int, str]]) -> list[RequiredGate]:
    gates: list[RequiredGate] = []
    for item in _items(numbered):
        text = item.text
        commands = [span for span in _code_spans(text) if _looks_like_command(span)]
        gates.append(RequiredGate(text=text, commands=commands, kind=_gate_kind(text, commands), line=item.line))
    return gates


# A bullet in words that asks for a script to run ("Run local smoke script (documented entrypoint)").
_SCRIPT_BULLET_RE = re.compile(r"\b(?:run|execute|invoke)\b.*\bscripts?\b|\bsmoke\s+(?:script|test)s?\b", re.I)


def asks_for_a_script(text: str) -> bool:
    """Whether a gate bullet without a command asks for a script to run at its place."""
    return bool(_SCRIPT_BULLET_RE.search(text))


def _compose_gate(gates: list[RequiredGate]) -> ComposeGate | None:
    """Up, the steps after it, down: in the order the doc lists them, across bullets."""
    steps: list[SmokeStep] = []
    for gate in gates:
        if gate.kind != "manual":
            steps.extend(SmokeStep(gate.text, command) for command in gate.commands)
        elif not gate.commands and asks_for_a_script(gate.text):
            steps.append(SmokeStep(gate.text))
    up_index = next((i for i, s in enumerate(steps) if s.command and compose_subcommand(s.command) == "up"), None)
    if up_index is None:
        return None
    down_index = next(
        (i for i, s in enumerate(steps) if i > up_index and s.command and compose_subcommand(s.command) == "down"),
        None,
    )
    if down_index is None:
        return None
    between = steps[up_index + 1 : down_index]
    return ComposeGate(
        up=str(steps[up_index].command),
        smoke=[step.command for step in between if step.command],
        down=str(steps[down_index].command),
        steps=between,
    )


# --- the doc -------------------------------------------------------------------------------


def parse_track_doc(text: str) -> TrackSpec:
    """Parse a track doc's markdown into a :class:`TrackSpec`. Never raises on odd markdown.

    The title is the first level-1 heading. `sections` maps each lower-cased heading to its body
    (subsections included). `allowed` is every path-like code span in the "allowed to change"
    section(s); `required_gates` is one entry per top-level bullet of the gates section(s).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = _blocks(lines)
    title = next((block.heading for block in blocks if block.level == 1 and block.heading), None)
    sections: dict[str, str] = {}
    for block in blocks:
        if block.level == 1 and block.heading == title:
            continue
        key = block.heading.lower()
        body = "\n".join(lines[block.start : block.end]).strip("\n")
        sections[key] = f"{sections[key]}\n\n{body}" if key in sections else body
    allowed_lines = _qualifying_numbered(lines, blocks, _is_allowed_heading)
    allowed = _allowed_patterns([line for _index, line in allowed_lines])
    required = _required_gates(_qualifying_numbered(lines, blocks, _is_gates_heading))
    return TrackSpec(
        title=title,
        allowed=allowed,
        required_gates=required,
        compose=_compose_gate(required),
        sections=sections,
        scope_lines=_items(allowed_lines),
    )


# --- path patterns -------------------------------------------------------------------------


def _class_body(body: str) -> str:
    """A glob character class's body as a regex class body: only `a-z` ranges keep their meaning."""
    out: list[str] = []
    can_range = False
    for position, char in enumerate(body):
        if char == "-" and can_range and position + 1 < len(body):
            out.append("-")
            can_range = False
        else:
            out.append(re.escape(char))
            can_range = True
    return "".join(out)


def _segment_regex(segment: str) -> str:
    """A regex for one path segment of a pattern: `*` and `?` never cross `/`."""
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            start = index + 1
            start += 1 if segment[start : start + 1] in ("!", "^") else 0
            start += 1 if segment[start : start + 1] == "]" else 0  # a leading `]` is literal
            close = segment.find("]", start)
            if close == -1:
                out.append(re.escape(char))
            else:
                body = segment[index + 1 : close]
                negate = body[:1] in ("!", "^")
                body = _class_body(body[1:] if negate else body)
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                index = close
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def _compile_pattern(pattern: str) -> tuple[re.Pattern[str] | None, bool]:
    """(regex for the pattern without its trailing `/`, whether it names folders only).

    A regex of None means the pattern matches every path (`**`).
    """
    text = pattern.strip()
    text = re.sub(r"^(?:\./)+", "", text).lstrip("/")
    if text.endswith("/..."):
        text = text[: -len("...")]
    directory_only = text.endswith("/")
    segments = [segment for segment in text.rstrip("/").split("/") if segment not in ("", ".")]
    # `dir/**` is everything strictly below `dir`, which is what `dir/` means.
    while len(segments) > 1 and segments[-1] == "**":
        segments.pop()
        directory_only = True
    if not segments or segments == ["**"]:
        return None, False
    regex = ""
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            regex += "(?:[^/]+/)*"  # zero or more folders
        else:
            regex += _segment_regex(segment) + ("" if last else "/")
    try:
        return re.compile(regex + r"\Z"), directory_only
    except re.error:
        # A class like `[z-a]` that no regex accepts: the pattern can only mean itself, literally.
        return re.compile(re.escape("/".join(segments)) + r"\Z"), directory_only


def path_matches(path: str, pattern: str) -> bool:
    """Whether one pattern covers `path` (see the module docstring for the semantics)."""
    if not pattern.strip():
        return False
    regex, directory_only = _compile_pattern(pattern)
    if regex is None:
        return True
    parts = [part for part in path.split("/") if part not in ("", ".")]
    # A pattern that names a folder covers everything below it, as in gitignore.
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts))]
    if not directory_only:
        candidates.append("/".join(parts))
    return any(regex.match(candidate) for candidate in candidates)


def path_allowed(path: str, allowed: list[str]) -> bool:
    """Whether any of the `allowed` patterns covers `path`."""
    return any(path_matches(path, pattern) for pattern in allowed)


def out_of_scope(changes: list[ChangedFile], allowed: list[str]) -> list[str]:
    """Changed paths (both sides of a rename) that no allowed pattern covers, in order, once each.

    An empty `allowed` means the doc gives no scope, so nothing is out of it.
    """
    if not allowed:
        return []
    outside: list[str] = []
    for change in changes:
        for path in change.paths():
            if path not in outside and not path_allowed(path, allowed):
                outside.append(path)
    return outside


def _literal_prefix(pattern: str) -> tuple[str, bool]:
    """(the pattern's leading folders before any glob, whether the whole pattern is literal)."""
    text = re.sub(r"^(?:\./)+", "", pattern.strip()).lstrip("/")
    segments = text.split("/")
    literal: list[str] = []
    for segment in segments:
        if any(ch in segment for ch in "*?["):
            return "/".join(literal) + ("/" if literal else ""), False
        literal.append(segment)
    return text, True


def allowed_forbidden(spec: TrackSpec, rules: Rules) -> list[str]:
    """Allowed patterns that lie under a forbidden prefix of `rules` (candidates for an exception).

    `docs/api/openapi.yaml`, `docs/api/` and `docs/api/*.yaml` lie under `docs/api/`; a broad
    `docs/**` does not (it allows much more than the forbidden folder, and the guardrail still
    applies to it).
    """
    found: list[str] = []
    for pattern in spec.allowed:
        literal, exact = _literal_prefix(pattern)
        for prefix in rules.forbidden_prefixes:
            if prefix.endswith("/"):
                hit = bool(literal) and (literal.rstrip("/") + "/").startswith(prefix)
            else:
                hit = exact and literal.rstrip("/") == prefix
            if hit:
                found.append(pattern)
                break
    return found

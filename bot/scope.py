"""What a track doc's "allowed to change" lines name, in paths and in words, and which line allows a file.

Real docs mix paths with prose: "OpenAPI spec for the cancel endpoint", "Unit tests for the policy
engine", "README sections **only if needed**", "`deploy/local/*` compose topology and docs", and a
trailing "Do not change `internal/auth/`". Each item of the section becomes a :class:`ScopeItem`:
the paths it writes (in backticks, in bold, or plainly with a `/`), the kinds of file its words
name (tests, READMEs, OpenAPI specs and examples, schemas, compose files), and whether it excludes
rather than allows.

Precision before recall: a file is in scope only when a line plausibly names it, and the report
shows that line. A kind is a narrow shape of path (a test file, a README, an OpenAPI file), never
"anything the words might cover": "docs" alone names no file, "docs under `docs/runbooks/`" does
through its folder. An exclusion wins over every allowing line.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.runs import ChangedFile, ScopeMatch
from bot.trackdoc import DocLine, TrackSpec, path_matches

_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_BOLD_RE = re.compile(r"(\*\*|__)(.+?)\1")
_NOT_PATH_CHARS = set("(){}<>\"'=;|&$,:@!%^+#~")
# Plain words with a slash that are not paths.
_NOT_PATHS = {"and/or", "either/or", "input/output", "read/write", "i/o", "n/a", "on/off", "yes/no"}
# An item that says what must NOT change: "Do not change ...", "Don't touch ...", "Never edit ...".
_EXCLUDE_RE = re.compile(
    r"^(?:but\s+|and\s+)?(?:do\s+not|don't|never|must\s+not|no\s+changes?\s+to|nothing\s+(?:in|under)|not)\b",
    re.IGNORECASE,
)
# An exclusion at the end of an allowing item: "..., but do not change X" / "...; don't touch X".
_TRAILING_EXCLUDE_RE = re.compile(
    r"[;,.\u2014\u2013(]\s*(?:but\s+)?(?:do\s+not|don't|never|must\s+not)\s+(?:change|edit|touch|modify)\b",
    re.IGNORECASE,
)
# A gate bullet that asks for a change ("Update OpenAPI with agent endpoints") names what may change.
_CHANGE_VERB_RE = re.compile(
    r"^\W*(?:update|add|extend|document|regenerate|write|create|amend|adjust|revise)\b", re.IGNORECASE
)

_DATA_SUFFIXES = (".yaml", ".yml", ".json")
_DOC_SUFFIXES = (".md", ".mdx", ".rst", ".txt", ".adoc")
_TEST_NAME_RES = (
    re.compile(r".*_test\.go\Z"),
    re.compile(r"test_.*\.py\Z"),
    re.compile(r".*_test\.py\Z"),
    re.compile(r".*\.(?:test|spec)\.[cm]?[jt]sx?\Z"),
    re.compile(r".*Tests?\.(?:java|kt|cs|swift)\Z"),
    re.compile(r".*_spec\.rb\Z"),
    re.compile(r".*_test\.(?:rs|exs|dart)\Z"),
)
_COMPOSE_NAME_RE = re.compile(r"(?:docker-)?compose[\w.-]*\.ya?ml\Z")


def _parts(path: str) -> tuple[list[str], str]:
    parts = path.split("/")
    return [p.lower() for p in parts[:-1]], parts[-1]


def _is_test(path: str) -> bool:
    folders, name = _parts(path)
    if any(regex.match(name) for regex in _TEST_NAME_RES):
        return True
    # A file under a tests folder (`tests/`, `test/`, `__tests__/`, `testdata/`) is part of the tests.
    return any(folder in ("tests", "test", "__tests__", "testdata", "spec") for folder in folders)


def _is_readme(path: str) -> bool:
    return _parts(path)[1].lower().startswith("readme")


def _is_openapi(path: str) -> bool:
    folders, name = _parts(path)
    lowered = name.lower()
    if not lowered.endswith(_DATA_SUFFIXES):
        return False
    if lowered.startswith(("openapi", "swagger")):
        return True
    # Specs split into files (`docs/api/paths/cancel.yaml`) and their examples live under an api folder.
    return any(folder in ("openapi", "swagger", "api", "apis") for folder in folders)


def _is_schema(path: str) -> bool:
    folders, name = _parts(path)
    return "schema" in name.lower() or any(folder in ("schema", "schemas") for folder in folders)


def _is_compose(path: str) -> bool:
    return bool(_COMPOSE_NAME_RE.match(_parts(path)[1].lower()))


@dataclass(frozen=True)
class FileKind:
    """A kind of file a doc's words can name: what the words are, and which paths are of that kind."""

    name: str  # as the report says it
    words: re.Pattern[str]
    matches: Callable[[str], bool]


KINDS = (
    FileKind(
        "tests",
        re.compile(
            r"\b(?:unit|integration|e2e|end-to-end|regression|golden)\s+tests?\b|\btests\b|\btest\s+files?\b", re.I
        ),
        _is_test,
    ),
    FileKind("READMEs", re.compile(r"\breadmes?\b", re.I), _is_readme),
    FileKind("OpenAPI specs and examples", re.compile(r"\bopen\s?api\b|\bswagger\b|\bapi\s+spec", re.I), _is_openapi),
    FileKind("schemas", re.compile(r"\bschemas?\b", re.I), _is_schema),
    FileKind("compose files", re.compile(r"\bcompose\b", re.I), _is_compose),
)


@dataclass(frozen=True)
class ScopeItem:
    """One line of the doc about what may (or may not) change, and what it names."""

    line: int
    text: str  # the doc's words, as written
    section: str  # "allowed" or "gates"
    patterns: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # FileKind names
    exclude: bool = False

    def names(self, path: str) -> str | None:
        """How this line names `path` (its pattern or its kind of file), or None if it does not."""
        pattern = next((p for p in self.patterns if path_matches(path, p)), None)
        if pattern is not None:
            return f"`{pattern}`"
        kind = self.kind_of(path)
        return kind.name if kind is not None else None

    def kind_of(self, path: str) -> FileKind | None:
        """The kind of file this line names that `path` is, within the line's folders if it names any.

        "Unit tests for `internal/policy/`" names the tests under that folder, not every test file.
        """
        folders = [p for p in self.patterns if p.endswith("/")]
        if folders and not any(path_matches(path, folder) for folder in folders):
            return None
        return next((k for k in KINDS if k.name in self.kinds and k.matches(path)), None)

    def names_by_pattern(self, path: str) -> str | None:
        """The pattern of this line that covers `path`, if one does."""
        return next((p for p in self.patterns if path_matches(path, p)), None)


def _as_pattern(candidate: str) -> str | None:
    """`candidate` as a path pattern, or None when it is not one (a command, code, a word)."""
    text = candidate.strip().strip(".,;:")
    if not text or any(ch.isspace() for ch in text) or any(ch in _NOT_PATH_CHARS for ch in text):
        return None
    if text.lower() in _NOT_PATHS or text.startswith(("http:", "https:")):
        return None
    if text.endswith("/..."):
        text = text[: -len("...")]
    # A trailing glob (`deploy/local/*`, `deploy/local/**`) is the folder and everything below it.
    text = re.sub(r"/\*{1,2}\Z", "/", text).lstrip("/")
    if text.startswith("./"):
        text = text[2:]
    if not text or ".." in text.split("/"):
        return None
    return text


def _plain_paths(text: str) -> list[str]:
    """Paths written without backticks: words with a `/` that look like a folder or a file."""
    found = []
    for word in text.split():
        word = word.strip(".,;:()[]")
        if "/" not in word or word.lower() in _NOT_PATHS:
            continue
        if not re.fullmatch(r"[\w.*-]+(?:/[\w.*-]+)*/?", word):
            continue
        last = word.rstrip("/").rsplit("/", 1)[-1]
        if word.endswith("/") or "." in last or word.count("/") >= 2 or word.endswith("*"):
            pattern = _as_pattern(word)
            if pattern is not None:
                found.append(pattern)
    return found


def _item(doc_line: DocLine, section: str, exclude: bool, text: str) -> ScopeItem | None:
    spans = [m.group(2).strip() for m in _CODE_SPAN_RE.finditer(text)]
    words = _CODE_SPAN_RE.sub(" ", text)
    bold = [m.group(2).strip() for m in _BOLD_RE.finditer(words)]
    patterns: list[str] = []
    # Every path-like code span is a path (`Makefile` too); a bold word only when it has a `/` or a dot.
    candidates = [*spans, *[word for word in bold if "/" in word or "." in word]]
    for candidate in candidates:
        pattern = _as_pattern(candidate)
        if pattern is not None and pattern not in patterns:
            patterns.append(pattern)
    prose = _BOLD_RE.sub(lambda m: m.group(2), words)
    for pattern in _plain_paths(prose):
        if pattern not in patterns:
            patterns.append(pattern)
    kinds = [kind.name for kind in KINDS if kind.words.search(prose)]
    if not patterns and not kinds:
        return None
    return ScopeItem(doc_line.line, text, section, patterns, kinds, exclude)


def scope_items(spec: TrackSpec) -> list[ScopeItem]:
    """Every line of the doc that names what may change (or may not), in the doc's order.

    The "allowed to change" section's items, each split at a trailing "do not change ..." into an
    allowing part and an excluding part; and the required gates that ask for a change ("Update
    OpenAPI with agent endpoints").
    """
    items: list[ScopeItem] = []
    for doc_line in spec.scope_lines:
        text = doc_line.text
        if _EXCLUDE_RE.match(_BOLD_RE.sub(lambda m: m.group(2), text)):
            parts = [(True, text)]
        else:
            cut = _TRAILING_EXCLUDE_RE.search(text)
            parts = [(False, text)] if cut is None else [(False, text[: cut.start()]), (True, text[cut.start() + 1 :])]
        for exclude, part in parts:
            item = _item(doc_line, "allowed", exclude, part.strip())
            if item is not None:
                items.append(item)
    for gate in spec.required_gates:
        if gate.kind == "manual" and _CHANGE_VERB_RE.match(gate.text):
            item = _item(DocLine(gate.line, gate.text), "gates", False, gate.text)
            if item is not None:
                items.append(item)
    return items


def has_scope(items: list[ScopeItem]) -> bool:
    """Whether the doc says what may change at all (only then can a file be outside its scope)."""
    return any(not item.exclude and item.section == "allowed" for item in items)


def _match(item: ScopeItem, path: str, how: str) -> ScopeMatch:
    return ScopeMatch(path=path, line=item.line, text=item.text, how=how, section=item.section)


def judge_path(path: str, items: list[ScopeItem]) -> tuple[ScopeMatch | None, ScopeMatch | None]:
    """(the first line allowing `path`, the first line excluding it); an exclusion wins over an allowing line."""
    allowed = excluded = None
    # A line that writes the path (or its folder) names it more plainly than one naming its kind.
    for by_kind in (False, True):
        for item in items:
            how = item.names(path) if by_kind else item.names_by_pattern(path)
            if how is None:
                continue
            how = how if by_kind else f"`{how}`"
            if item.exclude and excluded is None:
                excluded = _match(item, path, how)
            elif not item.exclude and allowed is None:
                allowed = _match(item, path, how)
    return allowed, excluded


@dataclass
class ScopeJudgement:
    """Each changed path: in scope by a line, excluded by a line, or outside every line."""

    in_scope: list[ScopeMatch] = field(default_factory=list)
    excluded: list[ScopeMatch] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)  # excluded paths included, in change order


def judge_scope(changes: list[ChangedFile], spec: TrackSpec) -> ScopeJudgement:
    """Which line of the doc allows each changed path (both sides of a rename), or that none does.

    A doc that says nothing of what may change leaves every path unjudged (none is outside).
    """
    items = scope_items(spec)
    judgement = ScopeJudgement()
    if not has_scope(items):
        return judgement
    seen: set[str] = set()
    for change in changes:
        for path in change.paths():
            if path in seen:
                continue
            seen.add(path)
            allowed, excluded = judge_path(path, items)
            if excluded is not None:
                judgement.excluded.append(excluded)
                judgement.outside.append(path)
            elif allowed is not None:
                judgement.in_scope.append(allowed)
            else:
                judgement.outside.append(path)
    return judgement


def naming_line(path: str, spec: TrackSpec, forbidden_entry: str) -> ScopeMatch | None:
    """The doc's line that names the forbidden `path` specifically enough for a guardrail exception.

    A path pattern counts when it lies under the forbidden entry (`docs/api/openapi.yaml` or
    `docs/api/` under `docs/api/`; a broad `docs/**` does not, as it names much more than the
    forbidden folder). Words count when they name the file's kind ("OpenAPI spec for the cancel
    endpoint" names `docs/api/runs/openapi.yaml`). An excluding line names nothing for an exception.
    """
    items = scope_items(spec)
    if judge_path(path, items)[1] is not None:
        return None
    for item in items:
        if item.exclude:
            continue
        for pattern in item.patterns:
            if path_matches(path, pattern) and _lies_under(pattern, forbidden_entry):
                return _match(item, path, f"`{pattern}`")
    for item in items:
        if item.exclude:
            continue
        kind = item.kind_of(path)
        if kind is not None:
            return _match(item, path, kind.name)
    return None


def _lies_under(pattern: str, entry: str) -> bool:
    literal: list[str] = []
    exact = True
    for segment in pattern.split("/"):
        if any(ch in segment for ch in "*?["):
            exact = False
            break
        literal.append(segment)
    prefix = "/".join(literal)
    if entry.endswith("/"):
        return bool(prefix) and (prefix.rstrip("/") + "/").startswith(entry)
    return exact and prefix.rstrip("/") == entry

"""A repository's own rules: ``.trackbot.toml`` at the root of its default branch.

Pure: the caller fetches the file's text (from ``origin/main``, never from the agent's work tree)
and passes it in, or None when the repository has no such file. Every refusal is one
:class:`RepoRulesError` that lists each problem with its line and what to change.

The file itself is always forbidden to the agent: a track must not rewrite its own guardrails.
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from bot.errors import ReadableError
from bot.invariants import DEFAULT_INVARIANTS, Invariant
from bot.knob import safe_repo_path
from bot.rules import DEFAULT_RULES, PRESETS, Rules

REPO_RULES_PATH = ".trackbot.toml"
ON_FAILURE_CHOICES = ("draft", "stop")
# How the approved advance reaches main: `auto` writes main directly and falls back to a one-line PR
# when a branch rule refuses the write; `direct` only writes; `pull_request` always opens the PR.
ADVANCE_MODES = ("auto", "direct", "pull_request")
# Gates the worker knows by name; `[gates.timeouts]` may also name any command of `[gates]`.
BUILTIN_GATES = ("go_test", "script", "compose")
MAX_TIMEOUT_S = 24 * 60 * 60

_TOP_LEVEL = {
    "guardrails": "table",
    "names": "table",
    "gates": "table",
    "advance": "table",
    "invariants": "array of tables ([[invariants]])",
    "plans": "table of plan kinds ([plans.phases])",
    "replace_default_invariants": "true or false",
}
_GUARDRAILS_KEYS = ("forbidden", "knob")
# key -> (Rules field, placeholders it must contain, placeholders it may use)
_NAME_KEYS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "branch": ("branch_template", ("n", "slug"), ("n", "slug")),
    "commit": ("commit_template", ("n",), ("n", "slug")),
    "pr_title": ("pr_title_template", ("n",), ("n", "slug")),
    "advance_message": ("advance_message_template", ("old", "new"), ("old", "new")),
}
_GATES_SETTINGS = ("on_failure", "timeout_s", "timeouts")
# [plans.NAME] keys: a preset to start from, then what differs (the names as in [names]).
_PLAN_KEYS = ("preset", "knob", "field", "docs", "noun", *_NAME_KEYS)
_PLAN_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GATE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_INVARIANT_KEYS = ("name", "paths", "pattern", "message")
# git check-ref-format: no space, `..`, `~^:?*[\`, control characters, `@{`, `//`; and a name
# that does not start with `-` or `/`, nor end with `/`, `.` or `.lock`.
_BAD_REF_CHARS_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class RepoRulesError(ReadableError):
    """``.trackbot.toml`` cannot be used. ``str()`` lists every problem: where, why, what to change."""


@dataclass(frozen=True)
class RepoRules:
    """The procedure's rules as this repository configures them."""

    rules: Rules = DEFAULT_RULES
    gate_commands: dict[str, str] = field(default_factory=dict)  # gate name -> command, e.g. go_test
    gate_timeouts: dict[str, int] = field(default_factory=dict)  # gate name or "default" -> seconds
    on_gate_failure: str = "draft"  # "draft": open a draft PR; "stop": stop before pushing
    invariants: list[Invariant] = field(default_factory=lambda: list(DEFAULT_INVARIANTS))
    # The repository's plan kinds by name (`tracks`, `phases`, its own); `rules` is the `tracks` one.
    plans: dict[str, Rules] = field(default_factory=dict)
    advance_mode: str = "auto"  # one of ADVANCE_MODES

    def gate_timeout(self, gate: str, fallback: int) -> int:
        """Seconds allowed for `gate`: its own timeout, else the file's default, else `fallback`."""
        return self.gate_timeouts.get(gate, self.gate_timeouts.get("default", fallback))

    def plan_names(self) -> list[str]:
        """The plan kinds this repository can run."""
        return list(dict.fromkeys(["tracks", *_plan_presets(self.rules), *self.plans]))

    def for_plan(self, name: str) -> RepoRules:
        """These rules for plan kind `name`: its knob, docs and names, the same guardrails, and every
        other plan's knob forbidden too (only a maintainer's advance changes a knob).

        Raises RepoRulesError naming the plans there are when the repository has no plan `name`.
        """
        plans = {**_plan_presets(self.rules), **self.plans}
        if name == "tracks" and "tracks" not in self.plans:
            chosen = self.rules
        elif name in plans:
            chosen = plans[name]
        else:
            problem = f"there is no plan `{name}`; this repository's plans are {', '.join(self.plan_names())}"
            raise RepoRulesError(f"{problem}. Use `--plan` with one of them.", [problem])
        knobs = {self.rules.knob_path, *(rules.knob_path for rules in plans.values())} - {chosen.knob_path}
        extra = tuple(sorted(k for k in knobs if k not in chosen.forbidden_prefixes))
        return replace(self, rules=replace(chosen, forbidden_prefixes=(*chosen.forbidden_prefixes, *extra)))


def _plan_presets(rules: Rules) -> dict[str, Rules]:
    """The shipped presets other than `tracks`, with this repository's guardrails."""
    return {
        name: replace(preset, forbidden_prefixes=rules.forbidden_prefixes)
        for name, preset in PRESETS.items()
        if name != "tracks"
    }


def _with_own_file_forbidden(rules: Rules) -> Rules:
    if REPO_RULES_PATH in rules.forbidden_prefixes:
        return rules
    return replace(rules, forbidden_prefixes=(*rules.forbidden_prefixes, REPO_RULES_PATH))


DEFAULT_REPO_RULES = RepoRules(rules=_with_own_file_forbidden(DEFAULT_RULES))


class _Problems:
    """Collects problems, each prefixed with the line it is on when that line can be found."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self._found: list[tuple[int, str]] = []

    @property
    def items(self) -> list[str]:
        """The problems in the order of the file, those without a line last."""
        return [message for _, message in sorted(self._found, key=lambda found: found[0])]

    def add(self, message: str, table: str | None = None, key: str | None = None, index: int | None = None) -> None:
        line = self._locate(table, key, index)
        self._found.append((line or len(self.lines) + 1, f"line {line}: {message}" if line else message))

    def _locate(self, table: str | None, key: str | None, index: int | None) -> int | None:
        """Best effort: the line of `key` in `[table]` (or the `index`-th `[[table]]`), else of the header."""
        start = 0
        if table is not None:
            name = r"\s*" + re.escape(table) + r"\s*"
            header = re.compile(rf"^\s*\[\[{name}\]\]" if index is not None else rf"^\s*\[\[?{name}\]\]?")
            matches = [number for number, line in enumerate(self.lines) if header.match(line)]
            position = index or 0
            if position >= len(matches):
                return None
            start = matches[position] + 1
        if key is None:
            return start if table is not None else None
        key_re = re.compile(r"^\s*(?:" + re.escape(key) + r'|"' + re.escape(key) + r'")\s*=')
        for number in range(start, len(self.lines)):
            if self.lines[number].lstrip().startswith("["):
                break
            if key_re.match(self.lines[number]):
                return number + 1
        return start if table is not None else None


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A "did you mean" hint for an unknown key, or why a known top-level key ended up in a table."""
    if word in _TOP_LEVEL and word not in choices:
        # TOML puts every key after a [table] header into that table.
        return f" ({word} belongs at the top of the file, before the first [table])"
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_table(value: Any, name: str, problems: _Problems) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(f"{name} must be a table: write it as [{name}] with keys below it", key=name)
    return None


def _check_forbidden(value: Any, problems: _Problems) -> tuple[str, ...] | None:
    where: dict[str, Any] = {"table": "guardrails", "key": "forbidden"}
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add('guardrails.forbidden must be a list of paths, like ["docs/api/", "secrets/"]', **where)
        return None
    entries: list[str] = []
    for entry in value:
        if any(ch in entry for ch in "*?["):
            problems.add(
                f'guardrails.forbidden entry "{entry}" is a glob; write a folder ending in "/" '
                '(e.g. "docs/api/") or an exact file',
                **where,
            )
            continue
        try:
            normalised = safe_repo_path(entry)
        except ValueError as error:
            problems.add(f"guardrails.forbidden entry {entry!r} is not usable: {error}", **where)
            continue
        expected = normalised + "/" if entry.endswith("/") else normalised
        if expected != entry:
            problems.add(f'guardrails.forbidden entry "{entry}" must be written "{expected}"', **where)
            continue
        entries.append(entry)
    return tuple(entries)


def _check_knob(value: Any, problems: _Problems) -> str | None:
    where: dict[str, Any] = {"table": "guardrails", "key": "knob"}
    if not isinstance(value, str):
        problems.add('guardrails.knob must be a path string, like "configs/NEXT_TRACK.json"', **where)
        return None
    try:
        normalised = safe_repo_path(value)
    except ValueError as error:
        problems.add(f"guardrails.knob is not usable: {error}", **where)
        return None
    if normalised != value or value.endswith("/"):
        problems.add(f'guardrails.knob must be a file path written "{normalised}"', **where)
        return None
    return value


def _git_ref_problem(name: str) -> str | None:
    """Why `name` is not a valid git branch name, or None."""
    if _BAD_REF_CHARS_RE.search(name):
        bad = sorted({ch if ch.isprintable() and ch != " " else repr(ch) for ch in _BAD_REF_CHARS_RE.findall(name)})
        return f"contains {', '.join(bad)}, which git does not allow in branch names"
    if ".." in name or "@{" in name or "//" in name:
        return 'contains "..", "@{" or "//", which git does not allow in branch names'
    if name.startswith(("-", "/")) or name.endswith(("/", ".", ".lock")) or name == "@":
        return 'starts with "-" or "/", or ends with "/", "." or ".lock"'
    if any(part.startswith(".") for part in name.split("/")):
        return 'has a part starting with "."'
    return None


def _check_template(key: str, value: Any, problems: _Problems, table: str = "names") -> str | None:
    where: dict[str, Any] = {"table": table, "key": key}
    _, required, allowed = _NAME_KEYS[key]
    if table != "names" and key == "branch":
        required = ("n",)  # a plan whose items have no slug (`phase-{n}`) names its branches by number
    example = ", ".join("{" + name + "}" for name in allowed)
    if not isinstance(value, str) or not value.strip():
        problems.add(f"{table}.{key} must be a non-empty string using {example}", **where)
        return None
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as error:
        problems.add(f"{table}.{key} is not a valid template ({error}); write placeholders as {example}", **where)
        return None
    unknown = sorted(fields - set(allowed))
    if unknown:
        listing = ", ".join("{" + name + "}" for name in unknown)
        problems.add(f"{table}.{key} uses {listing}; only {example} are available", **where)
        return None
    missing = [name for name in required if name not in fields]
    if missing:
        listing = " and ".join("{" + name + "}" for name in missing)
        problems.add(f'{table}.{key} must contain {listing} (e.g. "{_default_template(key)}")', **where)
        return None
    sample = {"n": 9, "slug": "federation-security-hardening", "old": 9, "new": 10}
    try:
        rendered = value.format(**sample)
    except (ValueError, IndexError, KeyError) as error:
        problems.add(f"{table}.{key} cannot be filled in ({error}); write placeholders as {example}", **where)
        return None
    if key == "branch":
        why = _git_ref_problem(rendered)
        if why:
            problems.add(
                f'{table}.branch gives "{rendered}", which {why}; use letters, digits, "-", "_" and "/"', **where
            )
            return None
    elif key in ("pr_title", "advance_message") and "\n" in rendered:
        problems.add(f"{table}.{key} must be one line", **where)
        return None
    return value


def _default_template(key: str) -> str:
    return str(getattr(DEFAULT_RULES, _NAME_KEYS[key][0]))


def _check_timeout(name: str, value: Any, problems: _Problems, table: str, key: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT_S:
        problems.add(
            f"{name} must be a whole number of seconds from 1 to {MAX_TIMEOUT_S} (e.g. 900), not {value!r}",
            table=table,
            key=key,
        )
        return None
    return value


def _parse_gates(gates: dict[str, Any], problems: _Problems) -> tuple[dict[str, str], dict[str, int], str]:
    commands: dict[str, str] = {}
    timeouts: dict[str, int] = {}
    on_failure = "draft"
    for key, value in gates.items():
        if key == "on_failure":
            if value not in ON_FAILURE_CHOICES:
                problems.add(f'gates.on_failure must be "draft" or "stop", not {value!r}', table="gates", key=key)
            else:
                on_failure = value
        elif key == "timeout_s":
            seconds = _check_timeout("gates.timeout_s", value, problems, "gates", key)
            if seconds is not None:
                timeouts["default"] = seconds
        elif key == "timeouts":
            continue  # after the commands, so that it may name them
        elif not _GATE_NAME_RE.match(key):
            problems.add(
                f'gates.{key}: a gate name uses lowercase letters, digits and "_" (e.g. go_test)',
                table="gates",
                key=key,
            )
        elif not isinstance(value, str) or not value.strip():
            hint = _suggest(key, _GATES_SETTINGS)
            problems.add(
                f'gates.{key} must be the command to run, like "go test ./...", not {value!r}{hint}',
                table="gates",
                key=key,
            )
        elif _suggest(key, _GATES_SETTINGS):
            # A typo of a setting would silently become a gate that runs e.g. `stop`.
            problems.add(f"gates.{key} is not a setting{_suggest(key, _GATES_SETTINGS)}", table="gates", key=key)
        else:
            commands[key] = value
    table = gates.get("timeouts")
    if table is not None:
        if not isinstance(table, dict):
            problems.add(
                "gates.timeouts must be a table: [gates.timeouts] with go_test = 1200", table="gates", key="timeouts"
            )
        else:
            known = ["default", *BUILTIN_GATES, *commands]
            for name, value in table.items():
                if name not in known:
                    problems.add(
                        f"gates.timeouts.{name} names no gate{_suggest(name, known)}; use one of {', '.join(known)}",
                        table="gates.timeouts",
                        key=name,
                    )
                    continue
                if name == "default" and "default" in timeouts:
                    problems.add(
                        "gates.timeouts.default and gates.timeout_s both set the default; keep one",
                        table="gates.timeouts",
                        key=name,
                    )
                    continue
                seconds = _check_timeout(f"gates.timeouts.{name}", value, problems, "gates.timeouts", name)
                if seconds is not None:
                    timeouts[name] = seconds
    return commands, timeouts, on_failure


def _parse_invariants(value: Any, problems: _Problems, taken: set[str]) -> list[Invariant]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add("invariants must be written as [[invariants]] tables", key="invariants")
        return []
    found: list[Invariant] = []
    for index, entry in enumerate(value):
        where: dict[str, Any] = {"table": "invariants", "index": index}
        label = f"invariants #{index + 1}"
        if isinstance(entry.get("name"), str) and entry["name"].strip():
            label = f'invariant "{entry["name"]}"'
        ok = True
        for key in entry:
            if key not in _INVARIANT_KEYS:
                problems.add(f"{label}: unknown key {key}{_suggest(key, _INVARIANT_KEYS)}", key=key, **where)
                ok = False  # still check the rest, to report every problem at once
        missing = [key for key in _INVARIANT_KEYS if key not in entry]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            problems.add(
                f"{label}: {' and '.join(missing)} {verb} missing (each [[invariants]] needs name, paths, "
                "pattern and message)",
                **where,
            )
            ok = False
        if missing:
            continue
        name, paths, pattern, message = (entry[key] for key in _INVARIANT_KEYS)
        if not isinstance(name, str) or not name.strip():
            problems.add(f"{label}: name must be a non-empty string", key="name", **where)
            ok = False
        elif name in taken:
            problems.add(
                f'{label}: the name "{name}" is already used; give each invariant its own name', key="name", **where
            )
            ok = False
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            problems.add(
                f'{label}: paths must be a non-empty list of patterns, like ["**/*_test.go"]', key="paths", **where
            )
            ok = False
        if not isinstance(pattern, str) or not pattern:
            problems.add(f"{label}: pattern must be a regular expression string", key="pattern", **where)
            ok = False
        else:
            try:
                re.compile(pattern)
            except re.error as error:
                problems.add(
                    f"{label}: pattern is not a valid regular expression ({error}); in TOML, write a backslash "
                    "as \\\\ in \"...\" strings or use a '...' literal string",
                    key="pattern",
                    **where,
                )
                ok = False
        if not isinstance(message, str) or not message.strip():
            problems.add(f"{label}: message must say what is wrong and what to do instead", key="message", **where)
            ok = False
        if ok:
            taken.add(name)
            found.append(Invariant(name=name, paths=list(paths), pattern=pattern, message=message))
    return found


def _parse_plans(value: Any, problems: _Problems, base: Rules) -> dict[str, Rules]:
    """`[plans.NAME]` tables: each starts from a preset (`tracks` or `phases`, default its own name if
    that is a preset, else `tracks`) and changes what it says; the guardrails are the repository's."""
    if not isinstance(value, dict):
        problems.add("plans must be tables: write [plans.phases] with its keys below it", key="plans")
        return {}
    found: dict[str, Rules] = {}
    for name, table in value.items():
        where = f"plans.{name}"
        if not _PLAN_NAME_RE.match(name):
            problems.add(f'{where}: a plan name uses lowercase letters, digits, "-" and "_"', table=where)
            continue
        if not isinstance(table, dict):
            problems.add(f"{where} must be a table", table=where)
            continue
        preset_name = table.get("preset", name if name in PRESETS else "tracks")
        if preset_name not in PRESETS:
            problems.add(f"{where}.preset must be one of {', '.join(PRESETS)}, not {preset_name!r}", table=where)
            continue
        rules = replace(PRESETS[preset_name], plan=name, forbidden_prefixes=base.forbidden_prefixes)
        if preset_name == "tracks":
            rules = replace(base, plan=name)
        for key, item in table.items():
            if key == "preset":
                continue
            if key not in _PLAN_KEYS:
                hint = _suggest(key, _PLAN_KEYS)
                problems.add(f"{where}.{key} is not a setting{hint}; use {', '.join(_PLAN_KEYS)}", table=where, key=key)
            elif key == "knob":
                knob = _check_knob(item, problems)
                if knob is not None:
                    rules = replace(rules, knob_path=knob)
            elif key == "field":
                if not isinstance(item, str) or not _FIELD_RE.match(item):
                    problems.add(f'{where}.field must name the knob\'s member, like "next"', table=where, key=key)
                else:
                    rules = replace(rules, knob_field=item)
            elif key == "docs":
                if not isinstance(item, str) or "{n}" not in item or not item.endswith(".md"):
                    problems.add(
                        f"{where}.docs must be a path pattern with {{n}} ending in .md, like "
                        '"docs/plan/{plan_version}/phases/phase-{n}.md"',
                        table=where,
                        key=key,
                    )
                else:
                    rules = replace(rules, doc_template=item)
            elif key == "noun":
                if not isinstance(item, str) or not item.strip() or "\n" in item:
                    problems.add(f'{where}.noun must be one word, like "Phase"', table=where, key=key)
                else:
                    rules = replace(rules, noun=item.strip())
            else:
                template = _check_template(key, item, problems, table=where)
                if template is not None:
                    override: dict[str, Any] = {_NAME_KEYS[key][0]: template}
                    rules = replace(rules, **override)
        found[name] = rules
    return found


def parse_repo_rules(text: str | None, path: str = REPO_RULES_PATH) -> RepoRules:
    """Parse ``.trackbot.toml`` into :class:`RepoRules`; None (no file) gives the defaults.

    Raises :class:`RepoRulesError` for invalid TOML (with line and column) and for every
    semantic problem at once: unknown tables or keys, templates without ``{n}`` (or ``{slug}`` for
    the branch) or giving branch names git refuses, unsafe forbidden paths, regexes that do not
    compile, ``on_failure`` other than draft or stop, and timeouts that are not positive seconds.
    """
    if text is None:
        return DEFAULT_REPO_RULES
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problem = f"it is not valid TOML: {error}"
        raise RepoRulesError(
            f"{path} cannot be read: {problem}. Fix {path} on main, then try again.", [problem]
        ) from None
    problems = _Problems(text)
    for key in data:
        if key not in _TOP_LEVEL:
            problems.add(
                f"unknown {'table' if isinstance(data[key], dict) else 'key'} {key}{_suggest(key, list(_TOP_LEVEL))}; "
                f"{path} may only have {', '.join(_TOP_LEVEL)}",
                table=key if isinstance(data[key], dict) else None,
                key=None if isinstance(data[key], dict) else key,
            )

    rules = DEFAULT_RULES
    guardrails = _check_table(data.get("guardrails", {}), "guardrails", problems)
    if guardrails:
        for key in guardrails:
            if key not in _GUARDRAILS_KEYS:
                problems.add(
                    f"guardrails.{key} is not a setting{_suggest(key, _GUARDRAILS_KEYS)}; use forbidden or knob",
                    table="guardrails",
                    key=key,
                )
        if "forbidden" in guardrails:
            forbidden = _check_forbidden(guardrails["forbidden"], problems)
            if forbidden is not None:
                rules = replace(rules, forbidden_prefixes=forbidden)
        if "knob" in guardrails:
            knob = _check_knob(guardrails["knob"], problems)
            if knob is not None:
                rules = replace(rules, knob_path=knob)

    names = _check_table(data.get("names", {}), "names", problems)
    if names:
        for key, value in names.items():
            if key not in _NAME_KEYS:
                problems.add(
                    f"names.{key} is not a setting{_suggest(key, list(_NAME_KEYS))}; use {', '.join(_NAME_KEYS)}",
                    table="names",
                    key=key,
                )
                continue
            template = _check_template(key, value, problems)
            if template is not None:
                overrides: dict[str, Any] = {_NAME_KEYS[key][0]: template}
                rules = replace(rules, **overrides)

    commands: dict[str, str] = {}
    timeouts: dict[str, int] = {}
    on_failure = "draft"
    gates = _check_table(data.get("gates", {}), "gates", problems)
    if gates:
        commands, timeouts, on_failure = _parse_gates(gates, problems)

    advance_mode = "auto"
    advance = _check_table(data.get("advance", {}), "advance", problems)
    if advance:
        for key, value in advance.items():
            if key != "mode":
                problems.add(f"advance.{key} is not a setting; use mode", table="advance", key=key)
            elif value not in ADVANCE_MODES:
                problems.add(
                    f"advance.mode must be one of {', '.join(ADVANCE_MODES)}, not {value!r}",
                    table="advance",
                    key="mode",
                )
            else:
                advance_mode = str(value)

    replace_defaults = data.get("replace_default_invariants", False)
    if not isinstance(replace_defaults, bool):
        problems.add("replace_default_invariants must be true or false", key="replace_default_invariants")
        replace_defaults = False
    invariants = [] if replace_defaults else list(DEFAULT_INVARIANTS)
    if "invariants" in data:
        invariants += _parse_invariants(data["invariants"], problems, {inv.name for inv in invariants})

    plans = _parse_plans(data["plans"], problems, rules) if "plans" in data else {}

    if problems.items:
        listing = "; ".join(problems.items)
        raise RepoRulesError(f"{path} is not valid: {listing}. Fix {path} on main, then try again.", problems.items)
    return RepoRules(
        plans={name: _with_own_file_forbidden(plan) for name, plan in plans.items()},
        rules=_with_own_file_forbidden(rules),
        gate_commands=commands,
        gate_timeouts=timeouts,
        on_gate_failure=on_failure,
        invariants=invariants,
        advance_mode=advance_mode,
    )

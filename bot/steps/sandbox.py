"""Running untrusted code for a step: the agent, a gate, gofmt on the agent's files.

Every such command runs in the run's sandbox (bot.adapters.sandbox): the work tree and the run's
home writable, the system read-only, nothing of trackbot's. With `TRACKBOT_SANDBOX=off` (an
explicit opt-out) it runs unconfined, and the run says so in its report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.adapters.egress import EgressLog
from bot.adapters.process import TAIL_LINES, ProcessResult, display, run_process
from bot.adapters.sandbox import SYSTEM_PATHS, Confinement, probe, run_confined
from bot.pipeline import RunContext


def sandbox_problem(ctx: RunContext) -> str | None:
    """Why no sandbox can be made for this run (the step must STOP), or None."""
    if ctx.settings.sandbox == "off":
        return None
    reason = probe()
    return None if reason is None else f"no sandbox can be made on this worker, so nothing was run: {reason}"


def run_home(ctx: RunContext) -> Path:
    """The run's home in the sandbox ($HOME: caches, the agent's config), made on first use."""
    home = ctx.settings.work_dir.resolve() / "sandbox" / ctx.run.id / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def remove_run_home(settings_work_dir: Path, run_id: str) -> None:
    """Delete what the run's sandboxes left (their home); nothing of it outlives the run."""
    shutil.rmtree(settings_work_dir.resolve() / "sandbox" / run_id, ignore_errors=True)


def confinement(ctx: RunContext, argv: Sequence[str], writable: Sequence[Path] = ()) -> Confinement:
    """What a command of this run may see: its tree, its home, the system, the named read-only paths.

    The files the command line names by absolute path (an agent's script) are shown read-only too;
    the work directory (clones, the embedded Redis, other runs) and the GitHub App's key are masked.
    """
    settings = ctx.settings
    shown = [*map(Path, SYSTEM_PATHS), *settings.sandbox_read_only]
    named = [
        Path(word)
        for word in argv
        if word.startswith("/") and Path(word).is_file() and not _under(Path(word), shown)
    ]
    masked = [settings.work_dir.resolve()]
    if settings.github_app_private_key_path is not None:
        masked.append(Path(settings.github_app_private_key_path).resolve())
    return Confinement(
        tree=ctx.clone.path.resolve(),
        home=run_home(ctx),
        read_only=(*settings.sandbox_read_only, *named),
        masked=tuple(masked),
        writable=tuple(writable),
    )


def _under(path: Path, folders: Sequence[Path]) -> bool:
    """Whether `path` is already visible through one of `folders`."""
    return any(path == folder or folder in path.parents for folder in folders)


def run_untrusted(
    ctx: RunContext,
    argv: Sequence[str],
    env: dict[str, str],
    timeout_s: float,
    egress: Sequence[str] = (),
    stdin_text: str | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = TAIL_LINES,
    idle_timeout_s: float | None = None,
    writable: Sequence[Path] = (),
    cwd: Path | None = None,
) -> tuple[ProcessResult, EgressLog | None]:
    """Run a command of the repository or the agent, confined unless the operator opted out."""
    if ctx.settings.sandbox == "off":
        ctx.run.unconfined = True
        result = run_process(
            argv,
            cwd or ctx.clone.path,
            env,
            timeout_s,
            stdin_text=stdin_text,
            on_line=on_line,
            tail_lines=tail_lines,
            idle_timeout_s=idle_timeout_s,
        )
        return result, None
    if argv and shutil.which(argv[0], path=env.get("PATH")) is None:
        return ProcessResult(display(argv), None, 0.0, f"{argv[0]}: not found on PATH", missing=True), None
    inner = list(argv)
    if cwd is not None and cwd.resolve() != ctx.clone.path.resolve():
        inner = ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "cd", str(cwd.resolve()), *argv]
    result, egress_log = run_confined(
        inner,
        confinement(ctx, inner, writable),
        env,
        timeout_s,
        egress=egress,
        stdin_text=stdin_text,
        on_line=on_line,
        tail_lines=tail_lines,
        idle_timeout_s=idle_timeout_s,
    )
    result.command = display(argv)
    return result, egress_log

"""What each /track subcommand does, independent of Slack: in come a user and a channel, out comes a Reply."""

from __future__ import annotations

import difflib
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis import RedisError

from bot import audit
from bot.adapters.github import GitHubError, GitHubFiles
from bot.adapters.slack import SlackError
from bot.cancel import CancelStatus, cancel_active
from bot.knob import KnobError, NextTrack, parse_knob
from bot.metrics import worker_beats
from bot.plan import DocNotFound, TrackDoc, known_plan_numbers, resolve_plan_doc
from bot.queueing import QueueingError, enqueue_run
from bot.render import STATE_WORDS, STEP_TITLES, help_text, mention, parent_text, section, track_title
from bot.repo_rules import RepoRulesError
from bot.retry import RetryError, retry_run
from bot.rules import Rules
from bot.runs import Run, RunState
from bot.services import Services

log = logging.getLogger(__name__)

SUBCOMMANDS = ("status", "run", "advance", "cancel", "retry", "plan", "history", "audit", "help")
HISTORY_LIMIT = 10


@dataclass
class Reply:
    """An answer to a command: ephemeral (only the user sees it) or in the channel."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    ephemeral: bool = True


@dataclass(frozen=True)
class NextTrackView:
    """The knob as read from main, with the doc of its next track (or why there is none)."""

    knob: NextTrack
    doc: TrackDoc | DocNotFound
    rules: Rules


class Commands:
    """The `/track` subcommands."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def dispatch(self, text: str, user: str, channel: str) -> Reply:
        """Route `/track <text>`; anything unknown gets the help."""
        words = text.split()
        plan, words = _plan_option(words)
        if plan == "":
            return Reply("`--plan` needs the plan's name, e.g. `/track run --plan phases`. " + help_text())
        name = words[0].lower() if words else "help"
        if name == "help":
            return Reply(help_text())
        if name not in SUBCOMMANDS:
            close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
            hint = f" Did you mean `/track {close[0]}`?" if close else ""
            return Reply(help_text(name) + hint)
        repo = self.services.settings.repository_for_channel(channel)
        if repo is None:
            return Reply(self.not_set_up(channel))
        if plan is not None and name not in ("status", "run", "advance", "plan"):
            return Reply(f"`/track {name}` does not take `--plan`: it acts on the repository's runs. " + help_text())
        plan = plan or "tracks"
        if name == "status":
            return self.status(repo, plan)
        if name == "run":
            flags = {w.lower() for w in words[1:]}
            unknown = flags - {"--dry-run"}
            if unknown:
                return Reply(f"`/track run` does not take {', '.join(sorted(unknown))}. " + help_text())
            return self.run(repo, user, channel, dry_run="--dry-run" in flags, plan=plan)
        if name == "cancel":
            return self.cancel(repo, user)
        if name == "retry":
            return self.retry(repo, user)
        if name == "audit":
            return self.audit(repo, user)
        if name == "plan":
            return self.plan(repo, plan)
        if name == "history":
            return self.history(repo)
        from bot.advance import Advancer  # advance imports commands' Reply

        return Advancer(self.services).advance_command(repo, user, channel, plan)

    def not_set_up(self, channel: str) -> str:
        """Why a channel cannot use /track, and where to go instead."""
        where = ", ".join(f"<#{c}> ({r})" for c, r in self.services.settings.channels.items())
        return (
            f"This channel is not set up for trackbot. Use {where}, or ask an operator to add it to TRACKBOT_CHANNELS."
        )

    def read_next_track(self, repo: str, plan: str = "tracks") -> NextTrackView | Reply:
        """The knob and the next track's doc from main, or a Reply saying why they cannot be read."""
        services = self.services
        try:
            rules = services.repo_rules(repo).for_plan(plan).rules
            knob_path = rules.knob_path
            github, base = services.github(repo), services.settings.base_branch
            found = github.read_text(knob_path, base)
            if found is None:
                return Reply(f":warning: `{knob_path}` does not exist on `{base}` of {repo}. Add it, then try again.")
            knob = parse_knob(found[0], knob_path, rules.knob_field)
            doc = resolve_plan_doc(knob, knob.next_track, GitHubFiles(github, base), rules.doc_template)
        except (KnobError, RepoRulesError) as error:
            return Reply(f":warning: {error}")
        except GitHubError as error:
            return Reply(
                f":warning: I could not read the plan: {services.redact(str(error))}. "
                "Check GITHUB_TOKEN and GITHUB_REPOSITORY, or try again shortly."
            )
        return NextTrackView(knob, doc, rules)

    def status(self, repo: str, plan: str = "tracks") -> Reply:
        """A card: plan version, the next track and a link to its doc, its state, queue position, last run."""
        view = self.read_next_track(repo, plan)
        if isinstance(view, Reply):
            return view
        knob, doc, rules = view.knob, view.doc, view.rules
        head = f"*{repo}* — plan `{knob.plan_version or '-'}`, {knob_label(rules)} = *{knob.next_track}*"
        if isinstance(doc, DocNotFound):
            text = f"{head}\n:octagonal_sign: No doc for the next track. {doc.message}"
            return Reply(text, [section(text)], ephemeral=False)
        settings = self.services.settings
        doc_url = f"{settings.github_web_url}/{repo}/blob/{settings.base_branch}/{doc.path}"
        lines = [
            head,
            f"{rules.noun} {doc.number}: *{doc.slug}* — doc <{doc_url}|`{doc.path}`>",
            "State: " + self.describe_state(repo, knob.next_track, rules.plan),
        ]
        position = self.queue_position(repo)
        if position is not None:
            lines.append(f"Queue position: {position}" + self.no_worker_note())
        last = self.services.store.latest(repo)
        if last is not None:
            lines.append(f"Last run: {describe_run(last)}")
        text = "\n".join(lines)
        return Reply(text, [section(text)], ephemeral=False)

    def cancel(self, repo: str, user: str) -> Reply:
        """Drop the queued run, or stop the running one (its agent's whole process group)."""
        services = self.services
        holder = services.store.lock_holder(repo)
        run = services.store.get(holder) if holder else None
        if run is not None and not _cancel_allowed(services, user, run):
            audit.record(services.redis, "refused", user, repo, "cancel: not allowed", run.id)
            return Reply(
                f":no_entry: Only {mention(run.requested_by)} (who queued it) or a maintainer "
                f"({services.roles.who_may_approve()}) can cancel {run.slug}."
            )
        outcome = cancel_active(services, repo, user)
        if outcome.status in (CancelStatus.CANCELLED, CancelStatus.STOPPING):
            audit.record(
                services.redis, "cancelled", user, repo, outcome.status.value, outcome.run.id if outcome.run else None
            )
        return Reply(outcome.message, ephemeral=outcome.status not in (CancelStatus.CANCELLED, CancelStatus.STOPPING))

    def retry(self, repo: str, user: str, run_id: str | None = None) -> Reply:
        """Re-run the last failed, stopped, cancelled or abandoned run (or `run_id`)."""
        services = self.services
        target = services.store.get(run_id) if run_id else services.store.latest(repo)
        if target is None:
            return Reply(f"There is no run of {repo} to retry; `/track run` starts one.")
        try:
            run = retry_run(services, target.id, user)
        except RetryError as error:
            audit.record(services.redis, "refused", user, repo, "retry: " + type(error).__name__, target.id)
            return Reply(f":no_entry: {error}")
        audit.record(services.redis, "retried", user, repo, "queued", run.id, f"retry of {target.id}")
        return Reply(f"Retrying {parent_text(run)}; progress follows in {self.link(run)}.", ephemeral=False)

    def audit(self, repo: str, user: str) -> Reply:
        """The latest decisions on this repository (maintainers only)."""
        services = self.services
        if not services.roles.is_maintainer(user):
            return Reply(f":no_entry: Only maintainers can read the audit log: {services.roles.who_may_approve()}.")
        entries = audit.recent(services.redis, limit=20, repo=repo)
        if not entries:
            return Reply(f"No decisions recorded for {repo} yet.")
        return Reply(f"*Audit — {repo}*\n" + audit.render_audit(entries))

    def no_worker_note(self) -> str:
        """A warning when no worker is alive to start a queued run (else nothing)."""
        try:
            alive = worker_beats(self.services.redis, self.services.queue)
        except RedisError:
            return ""
        if alive:
            return ""
        return (
            "\n:warning: No trackbot worker is running: the run waits in the queue until one starts. "
            "Ask an operator to start `trackbot worker`."
        )

    def queue_position(self, repo: str) -> int | None:
        """1-based position of the repository's queued run in the shared queue, if it is waiting."""
        holder = self.services.store.lock_holder(repo)
        if holder is None:
            return None
        ids = self.services.queue.get_job_ids()
        return ids.index(holder) + 1 if holder in ids else None

    def plan(self, repo: str, plan: str = "tracks") -> Reply:
        """Every track of the plan with its state: merged (with its PR), next, upcoming."""
        view = self.read_next_track(repo, plan)
        if isinstance(view, Reply):
            return view
        knob, rules = view.knob, view.rules
        services = self.services
        try:
            files = GitHubFiles(services.github(repo), services.settings.base_branch)
            numbers = known_plan_numbers(knob, files, rules.doc_template)
        except GitHubError as error:
            return Reply(f":warning: I could not list the plan's tracks: {services.redact(str(error))}.")
        numbers = sorted(set(numbers) | {knob.next_track})
        runs = services.store.runs(repo, limit=200)
        lines = [f"*{repo}* — plan `{knob.plan_version or '-'}`"]
        for number in numbers:
            entry = knob.entry(number)
            name = f"{rules.noun} {number}" + (f": {entry.slug}" if entry else "")
            done = next(
                (r for r in runs if r.track == number and r.plan == rules.plan and r.state is RunState.ADVANCED), None
            )
            if number < knob.next_track:
                pr = f" — PR #{done.pr_number} {done.pr_url}" if done and done.pr_number else ""
                lines.append(f":white_check_mark: {name} — merged{pr}")
            elif number == knob.next_track:
                lines.append(f":arrow_right: {name} — next: {self.describe_state(repo, number, rules.plan)}")
            else:
                lines.append(f":white_circle: {name} — upcoming")
        text = "\n".join(lines)
        return Reply(text, [section(text)], ephemeral=False)

    def history(self, repo: str) -> Reply:
        """The last runs: who, when, outcome, PR."""
        runs = self.services.store.runs(repo, limit=HISTORY_LIMIT)
        if not runs:
            return Reply(f"No runs of {repo} yet.", ephemeral=False)
        lines = [f"*{repo}* — last {len(runs)} run(s)"] + [f"• {describe_run(run)}" for run in runs]
        text = "\n".join(lines)
        return Reply(text, [section(text)], ephemeral=False)

    def describe_state(self, repo: str, track: int, plan: str = "tracks") -> str:
        """idle, queued, running (with its step), PR open, merged awaiting advance, failed..."""
        store = self.services.store
        holder = store.lock_holder(repo)
        active = store.get(holder) if holder else None
        if active is not None and active.state.active:
            if active.state is RunState.RUNNING and active.current_step:
                return f"running — {STEP_TITLES.get(active.current_step, active.current_step)} ({self.link(active)})"
            return f"{STATE_WORDS[active.state]} ({self.link(active)})"
        latest = store.latest(repo, track, plan)
        if latest is None:
            return "idle — no run yet; `/track run` starts one"
        words = STATE_WORDS[latest.state]
        if latest.state is RunState.PR_OPEN:
            return f"{words}: PR #{latest.pr_number} {latest.pr_url}"
        if latest.state is RunState.MERGED:
            return f"{words}: PR #{latest.pr_number} merged; a maintainer approves in {self.link(latest)}"
        if latest.state is RunState.ADVANCING:
            return (
                f"{words}: NEXT_TRACK {latest.track} → {latest.track + 1} waits for PR "
                f"#{latest.advance_pr_number} {latest.advance_pr_url} to merge ({self.link(latest)})"
            )
        if latest.state in (RunState.STOPPED, RunState.FAILED):
            reason = latest.stop_reason or latest.error or ""
            return f"{words} — {reason} ({self.link(latest)}); `/track run` tries again"
        return f"{words} ({self.link(latest)})"

    def link(self, run: Run) -> str:
        """A link to the run's thread (or words when there is none)."""
        if run.thread_ts is None:
            return "its thread is not posted yet"
        url = self.services.poster.permalink(run.channel, run.thread_ts)
        return f"<{url}|thread>" if url else "see its thread"

    def holder_run(self, holder: str, wait_s: float = 2.0) -> Run | None:
        """The run holding the repository; one queued this very moment gets a little time to post its thread."""
        deadline = time.monotonic() + wait_s
        while True:
            busy = self.services.store.get(holder)
            if busy is not None and busy.thread_ts is not None:
                return busy
            if busy is not None and not busy.state.active:
                return busy
            if time.monotonic() >= deadline:
                return busy
            time.sleep(0.05)

    def run(self, repo: str, user: str, channel: str, dry_run: bool = False, plan: str = "tracks") -> Reply:
        """Queue a run of the next track (of plan kind `plan`), unless the repository is busy or the
        track is not ready."""
        services = self.services
        if not services.roles.may_run(user):
            audit.record(services.redis, "run_refused", user, repo, "not a runner")
            return Reply(f":no_entry: You may not start runs. Ask one of: {services.roles.who_may_run()}.")
        view = self.read_next_track(repo, plan)
        if isinstance(view, Reply):
            return view
        knob, doc = view.knob, view.doc
        if isinstance(doc, DocNotFound):
            audit.record(services.redis, "run_refused", user, repo, "no doc", detail=doc.message)
            return Reply(f":octagonal_sign: STOP — {doc.message}", ephemeral=False)
        latest = None if dry_run else services.store.latest(repo, knob.next_track, view.rules.plan)
        if latest is not None and latest.state is RunState.PR_OPEN:
            return Reply(
                f"{latest.noun} {latest.track} already has PR #{latest.pr_number} open: {latest.pr_url}. "
                "Merge it, then a maintainer approves advancing NEXT_TRACK."
            )
        if latest is not None and latest.state is RunState.MERGED:
            return Reply(
                f"{latest.noun} {latest.track}'s PR #{latest.pr_number} is merged and waits for a maintainer "
                f"to approve advancing NEXT_TRACK ({self.link(latest)}, or `/track advance`)."
            )
        if services.poster.may_post(channel) is False:
            # The run's thread, progress and report could not be posted here (not_in_channel), while
            # the run could still open a PR: refuse now. This answer goes through response_url,
            # which works without membership.
            audit.record(services.redis, "run_refused", user, repo, "bot not in the channel")
            return Reply(
                ":no_entry: I am not in this channel, so I could not post the run's thread here. "
                "`/invite @trackbot`, then `/track run` again."
            )
        run = Run(
            repo=repo,
            track=doc.number,
            slug=doc.slug,
            doc=doc.path,
            plan_version=knob.plan_version,
            plan=view.rules.plan,
            noun=view.rules.noun,
            branch=view.rules.branch(doc.number, doc.slug),
            requested_by=user,
            channel=channel,
            dry_run=dry_run,
        )
        holder = services.store.claim(run)
        if holder is not None:
            busy = self.holder_run(holder)
            if busy is None:
                return Reply("Another run holds this repository; try again in a moment.")
            return Reply(
                f"{busy.noun} {busy.track} is already {STATE_WORDS[busy.state]} for {run.repo} "
                f"(queued by {mention(busy.requested_by)}): {self.link(busy)}. "
                "One run per repository at a time."
            )
        try:
            run.thread_ts = services.poster.post(channel, parent_text(run))
            services.store.save(run)
        except SlackError as error:
            # The worker posts the parent itself; the run is not lost for a Slack hiccup.
            log.warning("posting the parent of %s: %s", run.id, error)
        try:
            enqueue_run(services, run)
        except QueueingError as error:
            audit.record(services.redis, "run_refused", user, repo, "queue failed", run.id, services.redact(str(error)))
            return Reply(f":boom: I could not queue the run ({services.redact(str(error))}). Try again.")
        audit.record(
            services.redis,
            "run_queued",
            user,
            repo,
            "dry run" if dry_run else "queued",
            run.id,
            track_title(run),
        )
        return Reply(f"Queued {parent_text(run)}. Progress follows in {self.link(run)}.{self.no_worker_note()}")


def _plan_option(words: list[str]) -> tuple[str | None, list[str]]:
    """(the `--plan NAME` (or `--plan=NAME`) of a command, the other words); "" when NAME is missing."""
    rest: list[str] = []
    plan: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        if word.lower() == "--plan":
            plan = words[index + 1].lower() if index + 1 < len(words) else ""
            index += 2
            continue
        if word.lower().startswith("--plan="):
            plan = word.split("=", 1)[1].lower()
        else:
            rest.append(word)
        index += 1
    return plan, rest


def knob_label(rules: Rules) -> str:
    """What the knob's number is called: NEXT_TRACK for the track runner, else its file and member."""
    if rules.plan == "tracks" and rules.knob_field == "next_track":
        return "NEXT_TRACK"
    return f"`{rules.knob_path.rsplit('/', 1)[-1]}` {rules.knob_field}"


def describe_run(run: Run) -> str:
    """One line: track, outcome, who, when, PR."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.created_at))
    pr = f", PR #{run.pr_number} {run.pr_url}" if run.pr_number else ""
    reason = run.stop_reason or run.error
    why = f" ({reason})" if reason and run.state in (RunState.STOPPED, RunState.FAILED) else ""
    return f"{track_title(run)} — {STATE_WORDS[run.state]}{why} — {mention(run.requested_by)}, {when}{pr}"


def _cancel_allowed(services: Services, user: str, run: Run | None) -> bool:
    """Whoever queued a run may cancel it; maintainers may cancel any."""
    return services.roles.is_maintainer(user) or (run is not None and run.requested_by == user)

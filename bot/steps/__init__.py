"""The steps of a run, in the order the procedure takes them."""

from bot.pipeline import Step
from bot.steps.agent import agent
from bot.steps.format import format_go
from bot.steps.gates import gates
from bot.steps.guardrails import guardrails
from bot.steps.preflight import preflight
from bot.steps.publish import commit, pull_request, push

RUN_STEPS: list[tuple[str, Step]] = [
    ("preflight", preflight),
    ("agent", agent),
    ("guardrails", guardrails),
    ("format", format_go),
    ("gates", gates),
    ("commit", commit),
    ("push", push),
    ("pull_request", pull_request),
]

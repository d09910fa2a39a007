"""The debate's prompts: one function per agent, plain text in, plain text out."""

from __future__ import annotations

from collections.abc import Sequence

from storyloom.apps.debate.models import SearchReport, Turn

__all__ = ["critic_prompt", "host_prompt", "language_line", "plan_prompt", "report_prompt", "summary_prompt"]


def language_line(language: str) -> str:
    return "请用中文回答。" if language == "zh" else "Answer in English."


def _history(summary: str, turns: Sequence[Turn]) -> str:
    parts: list[str] = []
    if summary:
        parts.append(f"Summary of the earlier conversation:\n{summary}")
    if turns:
        parts.append("Recent turns:\n" + "\n".join(f"{t.role}: {t.content}" for t in turns))
    return "\n\n".join(parts) if parts else "(this is the first message of the conversation)"


def summary_prompt(previous: str, turns: Sequence[Turn], budget_tokens: int) -> str:
    return (
        "Summarize this conversation so far for the agents who continue it: the questions asked, "
        f"the answers given, and what the user cares about. At most {budget_tokens // 2} words.\n\n"
        + _history(previous, turns)
    )


def plan_prompt(message: str, summary: str, turns: Sequence[Turn], language: str) -> str:
    return (
        "You are the Planner of a debate between agents. Plan how to answer the user's message: "
        "the approach, the key points to cover, and whether current facts from the web would help "
        "(if so, up to three short search queries).\n\n"
        f"{_history(summary, turns)}\n\nUser message: {message}\n\n{language_line(language)}"
    )


def _evidence(search: SearchReport) -> str:
    if not search.calls and not search.degraded:
        return "No web search was made."
    lines = [f"- {f}" for f in search.findings] or ["- (no usable results)"]
    note = f" ({search.degraded} of {search.calls} searches were unavailable)" if search.degraded else ""
    return f"Web findings{note}:\n" + "\n".join(lines)


def critic_prompt(
    persona: str, message: str, approach: str, key_points: Sequence[str], search: SearchReport,
    host_summary: str, round_no: int, language: str,
) -> str:  # fmt: skip
    earlier = f"\n\nThe Host's summary of round {round_no - 1}: {host_summary}" if host_summary else ""
    points = "\n".join(f"- {p}" for p in key_points) or "- (none)"
    return (
        f"You are a critic in round {round_no} of a debate: {persona}. Criticize the plan below in "
        "a short paragraph: what is wrong, missing or doubtful, and what you would change.\n\n"
        f"User message: {message}\n\nPlan: {approach}\nKey points:\n{points}\n\n{_evidence(search)}"
        f"{earlier}\n\n{language_line(language)}"
    )


def host_prompt(message: str, approach: str, critiques: Sequence[str], round_no: int, max_rounds: int) -> str:
    listed = "\n\n".join(f"Critic {i}: {c}" for i, c in enumerate(critiques, start=1))
    return (
        f"You are the Host of a debate, after round {round_no} of at most {max_rounds}. Summarize "
        "where the debate stands, list the open questions, and decide whether another round of "
        "critique would improve the answer (another_round).\n\n"
        f"User message: {message}\n\nPlan: {approach}\n\n{listed}"
    )


def report_prompt(
    message: str, summary: str, turns: Sequence[Turn], approach: str, host_summary: str,
    open_questions: Sequence[str], search: SearchReport, language: str,
) -> str:  # fmt: skip
    questions = "\n".join(f"- {q}" for q in open_questions) or "- (none)"
    return (
        "You are the Reporter. Write the final answer to the user's message, drawing on the plan, "
        "the debate's conclusion and the evidence; say plainly where evidence was missing.\n\n"
        f"{_history(summary, turns)}\n\nUser message: {message}\n\nPlan: {approach}\n\n"
        f"Conclusion of the debate: {host_summary}\nOpen questions:\n{questions}\n\n{_evidence(search)}"
        f"\n\n{language_line(language)}"
    )

"""Nova's prompts: the supervisor, the four sub-agents, the headline and the writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["AGENT_BRIEFS", "agent_prompt", "headline_prompt", "supervisor_prompt", "writer_prompt"]

AGENT_BRIEFS = {
    "profile": "ProfileAgent: describe the target readers: who they are, what they want, how they talk.",
    "insight": "InsightAgent: find the readers' pain points, feelings and the debates around the topic.",
    "facts": "FactsAgent: collect the facts, numbers and sources the post can rely on.",
    "hitpoint": "HitpointAgent: find the hooks: trending angles, surprising facts, what gets a post saved.",
}


def _language(language: str) -> str:
    return "请用中文回答。" if language == "zh" else "Answer in English."


def supervisor_prompt(request: str, audience: str, language: str) -> str:
    agents = "\n".join(f"- {brief}" for brief in AGENT_BRIEFS.values())
    return (
        "You are the supervisor of a team writing one Xiaohongshu (小红书) post. Decide the post's "
        "angle, which of these sub-agents the request needs (run), and what each should search for "
        f"(query):\n{agents}\n\nRequest: {request}\nAudience: {audience or '(not given)'}\n\n"
        + _language(language)
    )


def agent_prompt(
    agent: str, request: str, angle: str, findings: Sequence[str], degraded: int, language: str
) -> str:
    evidence = "\n".join(f"- {f}" for f in findings) or "- (no search results)"
    note = (
        f"\n({degraded} of the searches were unavailable: rely on what you know and say so.)"
        if degraded
        else ""
    )
    return (
        f"You are {AGENT_BRIEFS[agent]}\n\nRequest: {request}\nAngle: {angle}\n\n"
        f"Search results:\n{evidence}{note}\n\n{_language(language)}"
    )


def headline_prompt(request: str, angle: str, notes: Mapping[str, str], language: str) -> str:
    listed = "\n".join(f"- {agent}: {summary}" for agent, summary in notes.items()) or "- (none)"
    return (
        "Write the title (at most 20 characters, with an emoji if it fits) and 3-8 hashtags of a "
        f"Xiaohongshu post.\n\nRequest: {request}\nAngle: {angle}\nTeam notes:\n{listed}\n\n"
        + _language(language)
    )


def writer_prompt(
    request: str, angle: str, title: str, notes: Mapping[str, Sequence[str]], language: str
) -> str:
    listed = (
        "\n".join(f"[{agent}] " + "; ".join(points) for agent, points in notes.items() if points) or "(none)"
    )
    return (
        f"Write the body of the Xiaohongshu post titled “{title}”: short paragraphs, a personal voice, "
        "emoji as section markers, concrete tips, a question to the readers at the end. No title, no "
        f"hashtags.\n\nRequest: {request}\nAngle: {angle}\n\nThe team's notes:\n{listed}\n\n"
        f"target length: 300 words\n{_language(language)}"
    )

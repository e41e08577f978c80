"""What the sessions logged, and the verdict on it: latencies, errors, cross-talk."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.stats import percentile

_TAG_RE = re.compile(r"\[ref (\w+)-q(\d+)\]")
_STEP_EVENTS = frozenset({"new_message", "update_message", "stream_start", "delete_message"})
_NOTICE_PREFIXES = ("⚠️", "ℹ️")


def _tag(session: str, n: int) -> str:
    return f"[ref {session}-q{n}]"


@dataclass
class Asked:
    """One question a session sent, and when its task ended (None: it never did)."""

    session: str
    n: int
    text: str
    message_id: str
    sent: float
    done: float | None = None
    note: str = ""


@dataclass
class SessionLog:
    """What one chat session sent and every event its socket received, in order."""

    name: str
    asked: list[Asked] = field(default_factory=list)
    events: list[tuple[float, str, Any]] = field(default_factory=list)
    failure: str = ""  # why the session could not connect or start, if it could not


@dataclass
class Tally:
    """The verdict on a phase: per-question latencies and what went wrong."""

    latencies_ms: list[float]
    errors: int
    cross_talk: int
    warnings: int
    unattributed: int
    samples: list[str]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _ids(event: str, data: Any) -> list[str]:
    """The step ids an event is about: the step itself, a token's step, an element's message."""
    if not isinstance(data, dict):
        return []
    if event in _STEP_EVENTS or event == "stream_token":
        return [data["id"]] if isinstance(data.get("id"), str) else []
    if event == "element":
        return [data["forId"]] if isinstance(data.get("forId"), str) else []
    return []


def analyse(logs: Sequence[SessionLog], questions: int) -> Tally:
    """Latencies, errors, cross-talk and warnings of one phase, from what each socket received."""
    owner = {a.message_id: a.session for log in logs for a in log.asked}
    by_tag = {(a.session, a.n): a.message_id for log in logs for a in log.asked}
    parent: dict[str, str | None] = {}
    for log in logs:
        for _t, event, data in log.events:
            if event not in _STEP_EVENTS or not isinstance(data, dict):
                continue
            step_id = data.get("id")
            if isinstance(step_id, str) and (data.get("parentId") or step_id not in parent):
                parent[step_id] = data.get("parentId") or None

    def root_of(step_id: str) -> str | None:
        seen: set[str] = set()
        node = step_id
        while node not in owner:
            if node in seen or node not in parent:
                return None  # a cycle, or a parent never seen: cannot say whose it is
            seen.add(node)
            up = parent[node]
            if up is None:
                return node  # a server-side root (the on_chat_start run)
            node = up
        return node

    foreign: set[tuple[str, str]] = set()
    server_roots: dict[str, set[str]] = {}
    unattributed: set[tuple[str, str]] = set()
    samples: list[str] = []
    for log in logs:
        for _t, event, data in log.events:
            for step_id in _ids(event, data):
                root = root_of(step_id)
                if root is None:
                    unattributed.add((log.name, step_id))
                elif root in owner:
                    if owner[root] != log.name:
                        foreign.add((log.name, root))
                else:
                    server_roots.setdefault(root, set()).add(log.name)
            for text in _strings(data):
                for session, n in _TAG_RE.findall(text):
                    if session != log.name:
                        foreign.add((log.name, by_tag.get((session, int(n)), f"{session}-q{n}")))
    shared_roots = sum(len(names) - 1 for names in server_roots.values())
    for name, root in sorted(foreign)[:3]:
        samples.append(
            f"cross-talk: {name} received the answer to {owner.get(root, root)}'s {root}"
        )

    latencies: list[float] = []
    errors = warnings = 0
    for log in logs:
        if log.failure:
            samples.append(log.failure)
        errors += questions - len(log.asked)  # never asked: the session failed or gave up
        steps = _merged_steps(log)
        for a in log.asked:
            mine = [s for sid, s in steps.items() if root_of(sid) == a.message_id]
            outputs = [
                str(s.get("output") or "").strip()
                for s in mine
                if s.get("type") == "assistant_message"
            ]
            answered = any(o and not o.startswith(_NOTICE_PREFIXES) for o in outputs)
            warnings += sum(o.startswith("⚠️") for o in outputs)
            failed = [s for s in mine if s.get("isError")]
            why = a.note or (
                "no answer message" if not answered else "a step failed" if failed else ""
            )
            if a.done is None and not why:
                why = "no task_end"
            if why:
                errors += 1
                notices = [o for o in outputs if o.startswith("⚠️")] + [
                    str(s.get("output") or "") for s in failed
                ]
                detail = f": {notices[0][:160]}" if notices else ""
                samples.append(f"error: {a.session} q{a.n}: {why}{detail}")
            elif a.done is not None:
                latencies.append((a.done - a.sent) * 1000)
    return Tally(
        latencies,
        errors,
        len(foreign) + shared_roots,
        warnings,
        len(unattributed),
        samples,
    )


def _merged_steps(log: SessionLog) -> dict[str, dict[str, Any]]:
    """Each step's final state as the UI would show it: dicts merged, tokens appended."""
    steps: dict[str, dict[str, Any]] = {}
    for _t, event, data in log.events:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            continue
        if event in ("new_message", "update_message", "stream_start"):
            steps.setdefault(data["id"], {}).update(data)
        elif event == "stream_token" and data["id"] in steps:
            key = "input" if data.get("isInput") else "output"
            token = str(data.get("token") or "")
            step = steps[data["id"]]
            step[key] = token if data.get("isSequence") else str(step.get(key) or "") + token
    return steps


def _pct(values: Sequence[float], q: int) -> float | None:
    return percentile(values, q) if values else None

"""The review's model pass: each changed hunk, with the code it touches from the index and the
memories that apply, goes to the model, which answers with findings as JSON.

The answer is repaired when it is almost JSON (json-repair) and every finding is checked: its line
must be one the hunk added, its severity and category known, its message non-empty. Whatever does
not pass is dropped: a small local model that answers badly yields no finding, never a crash.
"""

from __future__ import annotations

import json_repair

from engine import SamplingParams
from engine.prompt import TextModel
from indexer.index import Index
from indexer.languages import language_for_path
from zhiyin.diffs import FileChange, Hunk
from zhiyin.findings import CATEGORIES, SEVERITIES, Finding
from zhiyin.prompts import repository_context, review_prompt

MAX_TOKENS = 256
CONTEXT_TOKENS = 512
MAX_MESSAGE_CHARS = 400
MAX_HUNK_LINES = 80  # longer hunks are reviewed in their first lines only


def model_findings(engine: TextModel, change: FileChange, hunk: Hunk, index: Index | None = None) -> list[Finding]:
    lines = hunk.added[:MAX_HUNK_LINES]
    if not lines:
        return []
    numbered = "\n".join(f"{number:>5} + {text}" for number, text in lines)
    context = ""
    if index is not None:
        items = index.context_for_cursor(change.path, lines[0][0], 0, CONTEXT_TOKENS)
        context = repository_context(items, language_for_path(change.path))
    prompt = review_prompt(engine, change.path, numbered, context)
    if prompt.num_tokens + MAX_TOKENS >= engine.max_context:
        prompt = review_prompt(engine, change.path, numbered)
        if prompt.num_tokens + MAX_TOKENS >= engine.max_context:
            return []
    params = SamplingParams(max_tokens=MAX_TOKENS, stop=prompt.stop, stop_token_ids=prompt.stop_token_ids)
    answer = "".join(chunk.text for chunk in engine.generate(prompt, params))
    return parse_findings(answer, change.path, {number for number, _text in lines})


def parse_findings(answer: str, path: str, added: set[int]) -> list[Finding]:
    """The valid findings in the model's `answer` (JSON, repaired if need be)."""
    data = json_repair.loads(answer[answer.find("{"):] if "{" in answer else answer)
    items = data.get("findings") if isinstance(data, dict) else data if isinstance(data, list) else None
    findings = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        line, message = item.get("line"), str(item.get("message") or "").strip()
        severity = str(item.get("severity", "")).lower()
        category = str(item.get("category", "")).lower()
        if not isinstance(line, int) or line not in added or not message:
            continue
        findings.append(Finding(
            path, line, line, severity if severity in SEVERITIES else "note",
            category if category in CATEGORIES else "bug", "model", message[:MAX_MESSAGE_CHARS], "model",
            "model review"))
    return findings

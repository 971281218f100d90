"""What a review reports: findings with a place, a severity, a category and their provenance."""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("note", "warning", "error")  # ascending
CATEGORIES = ("bug", "security", "convention", "performance", "style")
FORMATS = ("text", "markdown", "sarif", "github", "rdjson", "json")  # how a review can be written


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the repository root
    start_line: int  # 1-based, in the new file
    end_line: int
    severity: str
    category: str
    rule_id: str  # stable per check: "convention/<hash>", "past-fix/<commit>", "model"
    message: str  # for the user, translated
    source: str  # "convention", "past_fix" or "model"
    evidence: str  # where it comes from: "AGENTS.md:12", "commit 1a2b3c4d", "memory #7"
    suggestion: str | None = None  # replacement text for the lines, when one is safe

    def at_least(self, severity: str) -> bool:
        return SEVERITIES.index(self.severity) >= SEVERITIES.index(severity)

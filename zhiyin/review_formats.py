"""A review's findings in the formats CI tools read: SARIF 2.1.0 (GitHub code scanning), GitHub
workflow commands, reviewdog's rdjson, JSON, Markdown for a PR comment, and text for terminals."""

from __future__ import annotations

import json
from importlib.metadata import version

from rich.console import Console
from rich.text import Text

from zhiyin.i18n import N_, _
from zhiyin.review import ReviewResult

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"note": "note", "warning": "warning", "error": "error"}
_RDJSON_SEVERITY = {"note": "INFO", "warning": "WARNING", "error": "ERROR"}
_SEVERITY_STYLE = {"note": "cyan", "warning": "yellow", "error": "red"}

MSG_SUMMARY = N_("{findings} findings in {files} files ({lines} added lines) against {base}, {seconds:.1f} s.")
MSG_SKIPPED = N_("Skipped {path}: {why}.")
MSG_NO_FINDINGS = N_("No findings.")
MSG_TITLE = N_("Zhiyin review")
MSG_SUGGESTION = N_("Suggested change")
SEVERITY_LABELS = {"note": N_("note"), "warning": N_("warning"), "error": N_("error")}


def render(result: ReviewResult, fmt: str, *, color: bool = False) -> str:
    return {"text": lambda: _text(result, color), "markdown": lambda: _markdown(result),
            "sarif": lambda: json.dumps(sarif(result), ensure_ascii=False, indent=2),
            "github": lambda: _github(result), "rdjson": lambda: json.dumps(rdjson(result), ensure_ascii=False),
            "json": lambda: json.dumps(_json(result), ensure_ascii=False, indent=2)}[fmt]()


def sarif(result: ReviewResult) -> dict:
    rules = {f.rule_id: f for f in result.findings}
    return {
        "$schema": SARIF_SCHEMA, "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "zhiyin", "version": version("zhiyin"), "informationUri": "https://pypi.org/project/zhiyin/",
                "rules": [{"id": rule_id, "shortDescription": {"text": f.category},
                           "properties": {"category": f.category, "source": f.source}} for rule_id, f in rules.items()]}},
            "results": [{
                "ruleId": f.rule_id, "level": _SARIF_LEVEL[f.severity], "message": {"text": f.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": f.start_line, "endLine": f.end_line}}}],
                "properties": {"category": f.category, "evidence": f.evidence},
            } for f in result.findings],
            "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": [
                {"level": "note", "message": {"text": _(MSG_SKIPPED).format(path=path, why=why)}}
                for path, why in result.skipped]}],
        }],
    }


def rdjson(result: ReviewResult) -> dict:
    diagnostics = []
    for f in result.findings:
        diagnostic = {
            "message": f.message, "severity": _RDJSON_SEVERITY[f.severity],
            "location": {"path": f.path, "range": {"start": {"line": f.start_line}, "end": {"line": f.end_line}}},
            "code": {"value": f.rule_id}, "source": {"name": "zhiyin"},
        }
        if f.suggestion is not None:
            diagnostic["suggestions"] = [{"range": {"start": {"line": f.start_line, "column": 1},
                                                    "end": {"line": f.end_line + 1, "column": 1}},
                                          "text": f.suggestion + "\n"}]
        diagnostics.append(diagnostic)
    return {"source": {"name": "zhiyin"}, "severity": "WARNING", "diagnostics": diagnostics}


def _json(result: ReviewResult) -> dict:
    return {"base": result.base, "files": result.files, "added_lines": result.added_lines,
            "seconds": round(result.seconds, 2), "skipped": [{"path": p, "why": w} for p, w in result.skipped],
            "findings": [vars(f) for f in result.findings]}


def _github(result: ReviewResult) -> str:
    """Workflow commands: each finding becomes an annotation on the pull request's diff."""
    lines = []
    for f in result.findings:
        level = {"note": "notice", "warning": "warning", "error": "error"}[f.severity]
        props = f"file={_escape_property(f.path)},line={f.start_line},endLine={f.end_line},title={_escape_property(f.category)}"
        lines.append(f"::{level} {props}::{_escape_data(f.message + ' (' + f.evidence + ')')}")
    lines.append(_summary(result))
    return "\n".join(lines)


def _markdown(result: ReviewResult) -> str:
    parts = [f"### {_(MSG_TITLE)}", "", _summary(result), ""]
    for f in result.findings:
        parts.append(f"- **{_(SEVERITY_LABELS[f.severity])}** `{f.path}:{f.start_line}` ({f.category}) — "
                     f"{f.message} _({f.evidence})_")
        if f.suggestion:
            parts += ["", f"  <details><summary>{_(MSG_SUGGESTION)}</summary>", "", "  ```",
                      *[f"  {line}" for line in f.suggestion.split("\n")], "  ```", "  </details>"]
    if not result.findings:
        parts.append(_(MSG_NO_FINDINGS))
    parts += [f"- {_(MSG_SKIPPED).format(path=p, why=w)}" for p, w in result.skipped]
    return "\n".join(parts) + "\n"


def _text(result: ReviewResult, color: bool) -> str:
    console = Console(record=True, force_terminal=color, no_color=not color, width=120, highlight=False)
    with console.capture() as captured:
        for f in result.findings:
            line = Text(f"{f.path}:{f.start_line}: ")
            line.append(_(SEVERITY_LABELS[f.severity]), style=_SEVERITY_STYLE[f.severity])
            line.append(f" [{f.category}] {f.message} ({f.evidence})")
            console.print(line)
        for path, why in result.skipped:
            console.print(Text(_(MSG_SKIPPED).format(path=path, why=why), style="dim"))
        console.print(Text(_summary(result)))
    return captured.get().rstrip("\n")


def _summary(result: ReviewResult) -> str:
    return _(MSG_SUMMARY).format(findings=len(result.findings), files=result.files, lines=result.added_lines,
                                 base=result.base[:12], seconds=result.seconds)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")

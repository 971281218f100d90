"""Code actions: "Fix with Zhiyin" on a diagnostic, "Explain this code" on a selection.

An action only names a command with its arguments: the model runs when the user picks it, not
while the editor lists actions at every cursor move.
"""

from __future__ import annotations

import asyncio
import threading

from lsprotocol import types

from engine import SamplingParams
from zhiyin.backends import Backends
from zhiyin.i18n import N_, _, current_locale
from zhiyin.prompts import explain_prompt

FIX_COMMAND = "zhiyin.fixDiagnostic"
EXPLAIN_COMMAND = "zhiyin.explainCode"
REMEMBER_COMMAND = "zhiyin.rememberConvention"
MAX_FIX_ACTIONS = 3  # diagnostics offered a fix at one place
EXPLAIN_MAX_TOKENS = 256
MAX_EXPLAIN_CHARS = 6000
ENGINE_WAIT_S = 120.0

MSG_FIX = N_("Fix with Zhiyin: {problem}")
MSG_EXPLAIN = N_("Explain this code with Zhiyin")
MSG_REMEMBER = N_("Remember this as a project convention")
MSG_FIX_INSTRUCTION = N_("fix this problem on line {line}: {problem}")
MSG_NO_MODEL = N_("Zhiyin cannot explain: the model could not be loaded.")
MAX_TITLE_CHARS = 80


def code_actions(params: types.CodeActionParams, *, in_workspace: bool) -> list[types.CodeAction]:
    """Fixes for the diagnostics at the range; for a selection, an explanation and (in the
    workspace, which has a project memory) remembering it as a convention."""
    uri = params.text_document.uri
    actions = []
    for diagnostic in params.context.diagnostics[:MAX_FIX_ACTIONS]:
        problem = diagnostic.message.split("\n", 1)[0]
        title = _(MSG_FIX).format(problem=problem)[:MAX_TITLE_CHARS]
        actions.append(types.CodeAction(
            title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[diagnostic],
            command=types.Command(title=title, command=FIX_COMMAND,
                                  arguments=[uri, diagnostic.range.start.line, problem])))
    if params.range.start != params.range.end:
        title = _(MSG_EXPLAIN)
        actions.append(types.CodeAction(
            title=title, kind=types.CodeActionKind.Empty,
            command=types.Command(title=title, command=EXPLAIN_COMMAND, arguments=[uri, params.range])))
        if in_workspace:
            title = _(MSG_REMEMBER)
            actions.append(types.CodeAction(
                title=title, kind=types.CodeActionKind.Empty,
                command=types.Command(title=title, command=REMEMBER_COMMAND, arguments=[uri, params.range])))
    return actions


def fix_instruction(line: int, problem: str) -> str:
    """The edit instruction for a diagnostic at 0-based `line`."""
    return _(MSG_FIX_INSTRUCTION).format(line=line + 1, problem=problem)


async def explain(backends: Backends, path: str, code: str) -> str:
    """The model's explanation of `code`, in the user's language."""
    def run() -> str:
        engine = backends.wait_for_engine(ENGINE_WAIT_S, threading.Event())
        if engine is None:
            return _(MSG_NO_MODEL)
        language = "Chinese" if current_locale().startswith("zh") else "English"
        prompt = explain_prompt(engine, path, code[:MAX_EXPLAIN_CHARS], language)
        params = SamplingParams(max_tokens=EXPLAIN_MAX_TOKENS, stop=prompt.stop, stop_token_ids=prompt.stop_token_ids)
        return "".join(chunk.text for chunk in engine.generate(prompt, params)).strip()

    return await asyncio.get_running_loop().run_in_executor(None, run)

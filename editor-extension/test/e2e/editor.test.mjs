// The extension in a real VS Code (code-server 4.100.3 in headless Chromium), installed from the
// built .vsix, running the real Python server with the default model on a real repository.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { eventually, installCodeServer, makeRepository, openFile, runCommand, screenshot, startVSCode } from "./vscode.mjs";
import {
  askInChat, chatFrame, notifications, typeAtEnd, waitForGhostText, waitForModel, waitForNotification, zhiyinStatus,
} from "./workbench.mjs";

const AGENTS_ZH = "# 约定\n\n- 不要用 `print()` 输出调试信息，统一用 `logging`。\n";

/** Opens `file` and selects `count` lines from the first that starts with `start`. */
async function selectLines(page, repo, file, start, count) {
  const line = fs.readFileSync(path.join(repo, file), "utf8").split("\n").findIndex((l) => l.startsWith(start)) + 1;
  assert.ok(line > 0, `${start} in ${file}`);
  await openFile(page, file);
  await page.keyboard.press("Control+G");
  await page.keyboard.type(String(line));
  await page.keyboard.press("Enter");
  for (let i = 0; i < count; i++) await page.keyboard.press("Shift+ArrowDown");
}

describe("Zhiyin in VS Code", function () {
  this.timeout(600_000);
  let vscode, repo, page;

  before(async () => {
    installCodeServer();
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), "zhiyin-e2e-"));
    repo = makeRepository(parent, "pathspec", { "AGENTS.md": AGENTS_ZH });
    vscode = await startVSCode({ folder: repo });
    page = vscode.page;
  });

  after(async () => {
    if (this.ctx.currentTest?.state === "failed") await screenshot(page, "failure-editor");
    await vscode?.close();
  });

  afterEach(async function () {
    if (this.currentTest.state === "failed") {
      await screenshot(page, `failed-${this.currentTest.title.replace(/\W+/g, "-")}`);
      console.log(vscode.serverLog().slice(-4000));
    }
  });

  it("starts the server and names the model in the status bar", async () => {
    await openFile(page, "pathspec/util.py");
    const status = await waitForModel(page);
    assert.match(status, /SmolLM2-135M/);
  });

  it("shows ghost text in a Python file, and Tab accepts it", async () => {
    await typeAtEnd(page, "def normalize_path(path");
    const { ghost, line } = await waitForGhostText(page);
    assert.ok(ghost.trim(), "the ghost text is not empty");
    await screenshot(page, "inline-completion");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Control+S");
    const saved = await eventually(() => {
      const lines = fs.readFileSync(path.join(repo, "pathspec/util.py"), "utf8").split("\n");
      return lines.find((l) => l.startsWith("def normalize_path(path") && l !== "def normalize_path(path)");
    }, 10_000, "the accepted completion on disk");
    assert.equal(saved.trimEnd(), line.trimEnd(), "what was shown is what was inserted");
    // the editor closed the bracket; a completion that writes `)` itself must not leave two
    assert.equal(saved.split("(").length, saved.split(")").length, `balanced brackets: ${saved}`);
    await screenshot(page, "inline-completion-accepted");
    assert.match(await zhiyinStatus(page), /Last completion: \d+ ms/);
  });

  it("accepts ghost text a line (Ctrl+Down) or a word (Ctrl+Right) at a time", async () => {
    // the line that starts with `typed` as the document has it: ghost text left out
    const documentLine = (typed) => page.evaluate((start) => {
      for (const line of document.querySelectorAll(".monaco-editor.focused .view-line")) {
        const copy = line.cloneNode(true);
        copy.querySelectorAll("[class*=ghost-text]").forEach((g) => g.remove());
        const text = copy.textContent.replace(/\u00a0/g, " ").trimStart(); // the editor may indent it
        if (text.startsWith(start)) return text;
      }
      return null;
    }, typed);
    await openFile(page, "pathspec/pattern.py");
    const first = "def compile_patterns(lines";
    await typeAtEnd(page, first);
    const shown = (await waitForGhostText(page)).line.trim();
    // a line; VS Code accepts it in parts around the bracket the editor closed itself
    let line = await documentLine(first);
    for (let presses = 0; presses < 3 && line.trimEnd() !== shown; presses++) {
      const before = line;
      await page.keyboard.press("Control+ArrowDown");
      line = await eventually(async () => ((l) => (l !== before ? l : null))(await documentLine(first)), 10_000, "more accepted");
      assert.ok(shown.startsWith(line.trimEnd().replace(/\)$/, "")), `${line} is part of ${shown}`);
    }
    assert.equal(line.trimEnd(), shown);

    const second = "def match_patterns(patterns";
    await typeAtEnd(page, second);
    const whole = (await waitForGhostText(page)).line.trim();
    await page.keyboard.press("Control+ArrowRight");
    const partial = await eventually(async () => ((l) => (l !== second + ")" ? l : null))(await documentLine(second)),
      10_000, "a word accepted");
    const accepted = partial.slice(second.length).replace(/\)$/, ""); // the auto-closed bracket stays after the cursor
    assert.ok(accepted.trim() && whole.startsWith(second + accepted), `${partial} begins ${whole}`);
    assert.ok((second + accepted).length < whole.length, "a word, not the whole line");
    await page.keyboard.press("Escape");
    await page.keyboard.press("Control+S");
  });

  it("answers in the chat panel, streaming", async () => {
    await runCommand(page, "Zhiyin: Open the Chat");
    const frame = await chatFrame(page);
    const answer = await askInChat(frame, "What does normalize_file in @pathspec/util.py do?");
    assert.ok(answer.text.trim().length > 20, answer.text);
    assert.ok(answer.samples >= 3, `the answer grew while it streamed (${answer.samples} sizes seen)`);
    await screenshot(page, "chat-panel");
  });

  it("proposes a repository edit as diffs and applies it when asked", async () => {
    await runCommand(page, "Zhiyin: Edit the Repository");
    const input = page.locator(".quick-input-widget input");
    await input.waitFor();
    await input.fill("rename normalize_file to normalize_path_of");
    await page.keyboard.press("Enter");
    const apply = page.locator(".notifications-toasts .monaco-button", { hasText: "Apply" });
    await apply.waitFor({ timeout: 120_000 });
    const tabs = await page.locator(".tab").allTextContents();
    assert.ok(tabs.some((t) => t.includes("pathspec/util.py (proposed by Zhiyin)")), tabs.join(", "));
    await screenshot(page, "repository-edit-diff");
    await apply.click();
    await page.keyboard.press("Control+K");
    await page.keyboard.press("S"); // save all: applied edits are unsaved changes, as after a refactoring
    const util = await eventually(() => {
      const text = fs.readFileSync(path.join(repo, "pathspec/util.py"), "utf8");
      return text.includes("def normalize_path_of(") ? text : null;
    }, 30_000, "the edit on disk");
    // the definition and every call renamed; the same words in strings and docs are not code
    const pathspecPy = fs.readFileSync(path.join(repo, "pathspec/pathspec.py"), "utf8");
    for (const text of [util, pathspecPy]) assert.doesNotMatch(text, /def normalize_file\(|= normalize_file\(/);
    assert.equal(pathspecPy.match(/= normalize_path_of\(/g).length, 5);
    assert.ok(util.includes("Use normalize_file() with a"), "a string is left alone");
    const open = await page.locator(".tab").allTextContents();
    assert.ok(!open.some((t) => t.includes("proposed by Zhiyin")), "the diffs closed once applied");
    await screenshot(page, "repository-edit-applied");
  });

  it("reviews the uncommitted changes into the Problems view", async () => {
    await openFile(page, "pathspec/util.py");
    await typeAtEnd(page, "print(sys.argv)  # debug");
    await page.keyboard.press("Escape"); // no ghost text accepted
    await page.keyboard.press("Control+S");
    await runCommand(page, "Zhiyin: Review My Changes");
    const problems = page.locator(".markers-panel .monaco-list-row");
    await eventually(async () => (await problems.count()) > 0, 60_000, "problems listed");
    const rows = (await problems.allTextContents()).join("\n");
    assert.match(rows, /AGENTS\.md:3/);
    assert.match(rows, /print/);
    await screenshot(page, "review-problems");
  });

  it("explains the selection in the chat, from the editor", async () => {
    await selectLines(page, repo, "pathspec/pattern.py", "class Pattern", 4);
    await runCommand(page, "Zhiyin: Explain the Selection");
    const frame = await chatFrame(page);
    const question = frame.locator(".message.user").last();
    await eventually(async () => (await question.innerText()).includes("Explain what this code does."), 30_000,
      "the question in the chat");
    const answer = frame.locator(".message.assistant").last();
    await eventually(async () => !(await answer.evaluate((el) => el.classList.contains("streaming")))
      && (await answer.locator(".body").innerText()).trim().length > 0, 180_000, "the answer");
    await screenshot(page, "explain-selection");
  });

  it("remembers a convention from the selection and lists it with the project memory", async () => {
    await selectLines(page, repo, "pathspec/util.py", "def normalize_path_of(", 3);
    await runCommand(page, "Zhiyin: Remember as a Convention");
    await waitForNotification(page, /Zhiyin will remember this convention \(#\d+\)/);
    await runCommand(page, "Zhiyin: Show the Project Memory");
    const rows = page.locator(".quick-input-list .monaco-list-row");
    const listed = await eventually(async () => {
      const text = (await rows.allTextContents()).join("\n");
      return /#\d+ /.test(text) ? text : null;
    }, 15_000, "the memories");
    assert.match(listed, /convention/);
    assert.match(listed, /pathspec\/util\.py:\d+/);
    await screenshot(page, "project-memory");
    await page.keyboard.press("Enter"); // opens the cited lines
    await page.locator('.tab.active[data-resource-name="util.py"]').waitFor();
  });

  it("restarts a crashed server and says so", async () => {
    const [pid] = vscode.serverPids();
    assert.ok(pid, "the language server runs");
    process.kill(pid, "SIGKILL");
    await waitForNotification(page, /stopped unexpectedly; restarting it/);
    await screenshot(page, "server-restarted");
    await eventually(() => vscode.serverPids().some((p) => p !== pid), 60_000, "a new server process");
    await waitForModel(page);
    const frame = await chatFrame(page); // the chat panel follows the new server
    await eventually(async () => /Ready/.test(await frame.locator("#status").innerText()), 30_000, "the chat connected again");
  });

  it("keeps working with a huge file open", async () => {
    const big = path.join(repo, "pathspec", "generated_table.py");
    fs.writeFileSync(big, Array.from({ length: 60_000 }, (_, i) => `VALUE_${i} = ${i}  # generated\n`).join(""));
    await openFile(page, "pathspec/generated_table.py");
    await typeAtEnd(page, "VALUE_LAST = ");
    await page.waitForTimeout(3000);
    assert.equal(await page.locator(".monaco-editor .ghost-text-decoration").count(), 0, "no completion in a huge file");
    assert.doesNotMatch(await notifications(page), /error|Error/);
    await openFile(page, "pathspec/pattern.py"); // and completions still come elsewhere
    await typeAtEnd(page, "def match_all(self, files");
    await waitForGhostText(page);
  });
});

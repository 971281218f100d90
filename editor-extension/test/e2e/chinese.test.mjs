// A Chinese-speaking user: VS Code's display language zh-cn; every string of the extension, the
// server's messages and the chat page in Chinese.
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { eventually, focusWorkbench, installCodeServer, makeRepository, openFile, runCommand, screenshot, startVSCode } from "./vscode.mjs";
import { chatFrame, waitForModel, waitForNotification } from "./workbench.mjs";

const CJK = /[\u4e00-\u9fff]/;
const COMMANDS = ["知音: 打开对话", "知音: 按指令修改仓库…", "知音: 审查未提交的改动", "知音: 查看项目记忆",
  "知音: 重启服务", "知音: 开启或关闭行内补全"];

describe("Zhiyin in VS Code, in Chinese", function () {
  this.timeout(600_000);
  let vscode, page, repo;

  before(async () => {
    installCodeServer();
    repo = makeRepository(fs.mkdtempSync(path.join(os.tmpdir(), "zhiyin-e2e-")));
    vscode = await startVSCode({ folder: repo, locale: "zh-cn" });
    page = vscode.page;
  });

  after(async () => vscode?.close());

  afterEach(async function () {
    if (this.currentTest.state === "failed") await screenshot(page, `failed-zh-${this.currentTest.title.replace(/\W+/g, "-")}`);
  });

  it("titles its commands in Chinese", async () => {
    const rows = page.locator(".quick-input-list .monaco-list-row");
    const titles = await eventually(async () => { // the extension's manifest is read a moment after start
      await page.keyboard.press("Escape");
      await focusWorkbench(page);
      await page.keyboard.press("F1");
      await page.locator(".quick-input-widget input").fill(">知音");
      await page.waitForTimeout(500);
      return (await rows.count()) >= COMMANDS.length ? (await rows.allTextContents()).join("\n") : null;
    }, 30_000, "the commands");
    for (const title of COMMANDS) assert.ok(titles.includes(title), `${title} in\n${titles}`);
    await screenshot(page, "zh-commands");
    await page.keyboard.press("Escape");
  });

  it("says what it is doing in the status bar in Chinese", async () => {
    await openFile(page, "pathspec/util.py");
    const status = await waitForModel(page);
    assert.match(status, /知音/);
    assert.match(status, /模型：SmolLM2/);
    assert.match(status, /点击关闭行内补全/);
  });

  it("shows the chat page in Chinese", async () => {
    await runCommand(page, "知音: 打开对话");
    const frame = await chatFrame(page);
    await eventually(async () => (await frame.locator("#send").textContent()) === "发送", 15_000, "the page in Chinese");
    assert.match(await frame.locator("#input").getAttribute("placeholder"), CJK);
    await screenshot(page, "zh-chat");
  });

  it("reports the server's findings in Chinese", async () => {
    fs.appendFileSync(path.join(repo, "pathspec/util.py"), "\nx = 1\n"); // a change, as another tool would make
    await runCommand(page, "知音: 审查未提交的改动");
    const text = await waitForNotification(page, /知音审查了 1 个改动的文件/);
    assert.match(text, /发现 0 个问题/);
    await screenshot(page, "zh-review");
  });
});

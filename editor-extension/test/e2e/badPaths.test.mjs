// What goes wrong on users' machines: no server installed, a Python without zhiyin, a model that
// cannot load, no folder open. (A crash while in use and a huge file: editor.test.mjs.)
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { eventually, installCodeServer, openFile, runCommand, screenshot, startVSCode } from "./vscode.mjs";
import { notifications, waitForModel, waitForNotification, zhiyinStatus } from "./workbench.mjs";

describe("Zhiyin in VS Code when things go wrong", function () {
  this.timeout(600_000);
  let vscode;

  before(() => installCodeServer());

  afterEach(async function () {
    if (this.currentTest.state === "failed" && vscode) {
      await screenshot(vscode.page, `failed-${this.currentTest.title.replace(/\W+/g, "-")}`);
    }
    await vscode?.close();
    vscode = undefined;
  });

  it("says how to install the server when it is not there", async () => {
    vscode = await startVSCode({ settings: { "zhiyin.pythonPath": "", "zhiyin.serverPath": "/nonexistent/bin/zhiyin" } });
    const text = await waitForNotification(vscode.page, /cannot find its server "\/nonexistent\/bin\/zhiyin"/);
    assert.match(text, /pip install zhiyin/);
    const buttons = await vscode.page.locator(".notifications-toasts .monaco-button").allTextContents();
    assert.ok(buttons.includes("Open Settings") && buttons.includes("How to Install"), buttons.join(", "));
    assert.match(await zhiyinStatus(vscode.page), /not installed/);
    await screenshot(vscode.page, "server-missing");
  });

  it("says when the chosen Python does not have zhiyin", async () => {
    vscode = await startVSCode({ settings: { "zhiyin.pythonPath": "/usr/bin/python3" } }); // Debian's: no zhiyin
    const text = await waitForNotification(vscode.page, /The Python at "\/usr\/bin\/python3" does not have zhiyin/);
    assert.match(text, /\/usr\/bin\/python3 -m pip install zhiyin/);
    assert.match(await zhiyinStatus(vscode.page), /not installed/);
  });

  it("says why when the model cannot load, in the status bar too", async () => {
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), "zhiyin-e2e-"));
    fs.writeFileSync(path.join(folder, "main.py"), "import os\n");
    vscode = await startVSCode({ folder, settings: { "zhiyin.model": path.join(folder, "missing.gguf") } });
    await openFile(vscode.page, "main.py"); // the model loads with the first file
    await waitForNotification(vscode.page, /Zhiyin cannot load the model/);
    const status = await eventually(async () => {
      const label = await zhiyinStatus(vscode.page);
      return /no model/.test(label) ? label : null;
    }, 60_000, "the status bar to say there is no model");
    assert.match(status, /missing\.gguf/);
    assert.match(status, /Set "zhiyin\.model"/);
    await screenshot(vscode.page, "model-missing");
  });

  it("works without a folder, and asks for one where it needs it", async () => {
    vscode = await startVSCode();
    await vscode.page.keyboard.press("Control+N"); // an untitled file: the server runs, the model loads
    await waitForModel(vscode.page);
    await runCommand(vscode.page, "Zhiyin: Review My Changes");
    await waitForNotification(vscode.page, /Open a folder first/);
    assert.doesNotMatch(await notifications(vscode.page), /failed|Error:/);
    await screenshot(vscode.page, "no-folder");
  });
});

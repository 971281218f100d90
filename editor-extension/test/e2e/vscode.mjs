// A real VS Code for the end-to-end tests: code-server 4.100.3 with the extension installed from the
// built .vsix, every state folder in a temporary directory, driven in Debian's Chromium by playwright-core.
import { execFileSync, spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const extensionRoot = path.resolve(here, "../..");
const repositoryRoot = path.resolve(extensionRoot, "..");
const codeServerDir = path.join(extensionRoot, "test/code-server");
const codeServer = path.join(codeServerDir, "node_modules/.bin/code-server");
export const screenshotDir = path.join(repositoryRoot, "build/screenshots/vscode");
export const python = process.env.ZHIYIN_PYTHON || path.join(repositoryRoot, ".venv/bin/python");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

export function installCodeServer() {
  execFileSync(path.join(codeServerDir, "install.sh"), { stdio: "inherit" });
}

/** A git repository of real code the project did not write: a PyPI package's sources, copied from
 * the Python environment zhiyin runs in, with `files` ({relative path: text}) beside them. */
export function makeRepository(parent, pkg = "pathspec", files = {}) {
  const source = execFileSync(python, ["-c", `import ${pkg}, os; print(os.path.dirname(${pkg}.__file__))`],
    { encoding: "utf8" }).trim();
  const root = path.join(parent, "repo");
  fs.cpSync(source, path.join(root, pkg), { recursive: true, filter: (p) => !p.includes("__pycache__") });
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(root, name), text);
  const git = (...args) => execFileSync("git", args, { cwd: root, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("add", "-A");
  git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "import " + pkg);
  return root;
}

/** VS Code loads an extension's zh-cn translations only when zh-cn is an installed display language;
 * the real language pack comes from the marketplace, out of reach here: a pack that adds the
 * language and translates nothing of VS Code itself stands in for it. */
function chineseLocalePack(dir) {
  const out = path.join(dir, "zh-hans-pack.vsix");
  execFileSync(path.join(extensionRoot, "node_modules/.bin/vsce"),
    ["package", "--allow-missing-repository", "--skip-license", "-o", out], { cwd: path.join(here, "zh-hans-pack"), stdio: "pipe" });
  return out;
}

/** What VS Code writes when a language pack is installed from inside the workbench (the command-line
 * install does not): the display languages the server may resolve `--locale` to. */
function registerLanguagePack(userDataDir, extensionsDir) {
  const manifest = JSON.parse(fs.readFileSync(path.join(here, "zh-hans-pack/package.json"), "utf8"));
  const id = `${manifest.publisher}.${manifest.name}`.toLowerCase();
  const folder = path.join(extensionsDir, `${id}-${manifest.version}`);
  const hash = crypto.createHash("md5").update(id).update(manifest.version).digest("hex");
  const [localization] = manifest.contributes.localizations;
  fs.writeFileSync(path.join(userDataDir, "languagepacks.json"), JSON.stringify({
    [localization.languageId]: { hash, label: localization.localizedLanguageName,
      extensions: [{ extensionIdentifier: { id }, version: manifest.version }],
      translations: { vscode: path.join(folder, localization.translations[0].path) } } }));
}

async function freePort() {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function waitForHttp(url, child, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`code-server exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`code-server did not answer at ${url}`);
}

/**
 * Starts code-server with the extension installed and a browser on it.
 * options.settings: user settings over the defaults; options.locale: "zh-cn" for Chinese;
 * options.folder: the folder to open (none: an empty window).
 */
export async function startVSCode(options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zhiyin-vscode-"));
  const env = { ...process.env, XDG_CONFIG_HOME: path.join(dir, "config"), XDG_DATA_HOME: path.join(dir, "data"),
    XDG_CACHE_HOME: path.join(dir, "cache"), TMPDIR: path.join(dir, "tmp"),
    ...(options.env ?? {}) };
  for (const sub of ["config", "data", "cache", "tmp", "user/User", "extensions"]) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  const settings = {
    "workbench.startupEditor": "none", "extensions.ignoreRecommendations": true, "workbench.tips.enabled": false,
    "telemetry.telemetryLevel": "off", "update.mode": "none", "security.workspace.trust.enabled": false,
    "editor.inlineSuggest.enabled": true, "editor.quickSuggestions": { other: false, comments: false, strings: false },
    "zhiyin.pythonPath": python, "zhiyin.embeddings": false, "zhiyin.maxTokens": 24,
    ...(options.settings ?? {}),
  };
  fs.writeFileSync(path.join(dir, "user/User/settings.json"), JSON.stringify(settings, null, 2));
  const common = ["--user-data-dir", path.join(dir, "user"), "--extensions-dir", path.join(dir, "extensions")];
  const extensions = [path.join(extensionRoot, "build/zhiyin.vsix")];
  if (options.locale === "zh-cn") extensions.push(chineseLocalePack(dir));
  for (const vsix of extensions) execFileSync(codeServer, [...common, "--install-extension", vsix], { env, stdio: "pipe" });
  if (options.locale === "zh-cn") registerLanguagePack(path.join(dir, "user"), path.join(dir, "extensions"));
  const port = await freePort();
  const args = [...common, "--bind-addr", `127.0.0.1:${port}`, "--auth", "none", "--disable-telemetry",
    "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override"];
  if (options.locale) args.push("--locale", options.locale);
  const log = fs.openSync(path.join(dir, "code-server.log"), "a");
  const child = spawn(codeServer, args, { env, stdio: ["ignore", log, log], detached: true });
  await waitForHttp(`http://127.0.0.1:${port}/healthz`, child, 60_000);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 },
    locale: options.locale === "zh-cn" ? "zh-CN" : "en-US" });
  const page = await context.newPage();
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(m.text()));
  const query = options.folder ? `?folder=${encodeURIComponent(options.folder)}` : "";
  await page.goto(`http://127.0.0.1:${port}/${query}`);
  await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
  return {
    dir, port, page, browser, child, consoleLines,
    log: () => fs.readFileSync(path.join(dir, "code-server.log"), "utf8"),
    /** The extension's output (the server's stderr among it). */
    serverLog: () => {
      const logs = path.join(dir, "user/logs");
      const found = fs.readdirSync(logs, { recursive: true }).filter((f) => f.endsWith("zhiyin.zhiyin/Zhiyin.log"));
      return found.map((f) => fs.readFileSync(path.join(logs, f), "utf8")).join("\n");
    },
    /** Process ids of the language servers the extension started. */
    serverPids: () => descendants(child.pid).filter((pid) => commandLine(pid).includes("zhiyin lsp")),
    async close() {
      await browser.close().catch(() => {});
      try { process.kill(-child.pid, "SIGTERM"); } catch { /* gone */ }
      await new Promise((r) => setTimeout(r, 500));
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
      if (!process.env.ZHIYIN_KEEP_TEST_DIRS) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function descendants(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(fs.readFileSync(`/proc/${entry}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch { /* exited */ }
  }
  const found = [];
  const queue = [pid];
  while (queue.length) for (const c of children.get(queue.shift()) ?? []) { found.push(c); queue.push(c); }
  return found;
}

function commandLine(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

export async function screenshot(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, name + ".png") });
}

/** Gives the keyboard back to the workbench: a webview (the chat) keeps it in its frame otherwise.
 * A click on the empty middle of the activity bar does nothing else. */
export async function focusWorkbench(page) {
  const bar = page.locator(".part.activitybar");
  const box = await bar.boundingBox();
  await bar.click({ position: { x: box.width / 2, y: box.height / 2 } });
}

/** The quick input, with `text` typed. */
async function quickInput(page, key, text) {
  await focusWorkbench(page);
  await page.keyboard.press(key);
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(text);
  return input;
}

/** Runs a command from the command palette by its title. */
export async function runCommand(page, title) {
  await quickInput(page, "F1", ">" + title);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press("Enter");
}

/** Opens a workspace file with Quick Open and puts the cursor in its editor. */
export async function openFile(page, relativePath) {
  const name = path.basename(relativePath);
  const group = page.locator(`.editor-group-container:has(.tab.active[data-resource-name="${name}"])`);
  await eventually(async () => { // again if a keystroke went to a webview that had just taken the focus
    await quickInput(page, "Control+P", relativePath);
    await page.locator(".quick-input-list .monaco-list-row .label-name", { hasText: name }).first().waitFor({ timeout: 10_000 });
    await page.waitForTimeout(300); // file search results arrive in batches and reorder the list
    // move the focus to the row named exactly so, then open it (a click could land on a row just replaced)
    for (let step = 0; step < 10; step++) {
      const focused = await page.locator(".quick-input-list .monaco-list-row.focused .label-name").first().textContent();
      if (focused?.trim() === name) break;
      await page.keyboard.press("ArrowDown");
    }
    await page.keyboard.press("Enter");
    await group.locator(".monaco-editor .view-lines:visible").first().waitFor({ timeout: 5_000 });
    return true;
  }, 45_000, `${relativePath} open`);
  await group.locator(".monaco-editor .view-lines:visible").first().click(); // a hidden diff editor may come first
}

/** Polls `check` until it answers a truthy value or `timeoutMs` passes. */
export async function eventually(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}` + (last instanceof Error ? `: ${last.message}` : ""));
}

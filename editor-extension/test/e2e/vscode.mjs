// A real VS Code for the end-to-end tests: code-server 4.100.3 with the extension installed from the
// built .vsix, every state folder in a temporary directory, driven in Debian's Chromium by playwright-core.
import { execFileSync, spawn } from "node:child_process";
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
 * the Python environment zhiyin runs in. */
export function makeRepository(parent, pkg = "pathspec") {
  const source = execFileSync(python, ["-c", `import ${pkg}, os; print(os.path.dirname(${pkg}.__file__))`],
    { encoding: "utf8" }).trim();
  const root = path.join(parent, "repo");
  fs.cpSync(source, path.join(root, pkg), { recursive: true, filter: (p) => !p.includes("__pycache__") });
  const git = (...args) => execFileSync("git", args, { cwd: root, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("add", "-A");
  git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", "import " + pkg);
  return root;
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
  execFileSync(codeServer, [...common, "--install-extension", path.join(extensionRoot, "build/zhiyin.vsix")],
    { env, stdio: "pipe" });
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
    async close() {
      await browser.close().catch(() => {});
      try { process.kill(-child.pid, "SIGTERM"); } catch { /* gone */ }
      await new Promise((r) => setTimeout(r, 500));
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
      if (!process.env.ZHIYIN_KEEP_TEST_DIRS) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, name + ".png") });
}

/** Runs a command from the command palette by its title. */
export async function runCommand(page, title) {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(">" + title);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press("Enter");
}

/** Opens a workspace file with Quick Open and waits for its editor. */
export async function openFile(page, relativePath) {
  await page.keyboard.press("Control+P");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor();
  await input.fill(relativePath);
  await page.locator(".quick-input-list .monaco-list-row").first().waitFor({ timeout: 15_000 });
  await page.keyboard.press("Enter");
  await page.locator(`.tab[data-resource-name="${path.basename(relativePath)}"]`).waitFor({ timeout: 15_000 });
  await page.locator(".monaco-editor .view-lines").first().click();
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

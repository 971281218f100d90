// The language server's lifecycle: start `zhiyin lsp` over stdio, restart it when it crashes
// (and say so), and stop it. Features come from vscode-languageclient; inline completions pass
// through a middleware that can switch them off and times them.
import { execFile } from "child_process";
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ResponseError,
  ServerOptions,
  State,
} from "vscode-languageclient/node";
import { findExecutable, serverCommand, serverLanguage, ServerSettings } from "./serverCommand";
import { ServerState } from "./statusText";

const MAX_RESTARTS = 4; // within RESTART_WINDOW_MS; past that the server stays down until the user restarts it
const RESTART_WINDOW_MS = 3 * 60 * 1000;
const INSTALL_URL = "https://pypi.org/project/zhiyin/";

export class ZhiyinClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private crashes: number[] = [];
  private explainedFailure = false; // the user was told why the server did not start
  private readonly stateEmitter = new vscode.EventEmitter<ServerState>();
  private readonly latencyEmitter = new vscode.EventEmitter<number>();
  readonly onDidChangeState = this.stateEmitter.event;
  readonly onDidComplete = this.latencyEmitter.event; // latency of each inline completion, ms
  state: ServerState = "stopped";
  inlineEnabled = true;

  constructor(private readonly output: vscode.LogOutputChannel, private readonly extensionPath: string) {}

  async start(): Promise<void> {
    const config = vscode.workspace.getConfiguration("zhiyin");
    const settings: ServerSettings = {
      pythonPath: config.get<string>("pythonPath", ""),
      serverPath: config.get<string>("serverPath", "zhiyin"),
      model: config.get<string>("model", ""),
    };
    const { command, args } = serverCommand(settings);
    if (!findExecutable(command)) {
      this.setState("missing");
      void this.explainMissing(vscode.l10n.t(
        "Zhiyin cannot find its server \"{0}\". Install it with \"pip install zhiyin\", or set \"zhiyin.pythonPath\" to a Python that has it.",
        command));
      return;
    }
    if (settings.pythonPath.trim() && !(await hasZhiyin(command, this.extensionPath))) {
      this.setState("missing");
      void this.explainMissing(vscode.l10n.t(
        "The Python at \"{0}\" does not have zhiyin. Install it with \"{0} -m pip install zhiyin\", or set \"zhiyin.pythonPath\" to a Python that has it.",
        command));
      return;
    }
    // stdio without a `--stdio` flag; the working folder is the extension's, not the workspace, whose
    // own modules would otherwise shadow the server's under `python -m` (a repository with a `pathspec/`)
    const serverOptions: ServerOptions = {
      command, args,
      options: { cwd: this.extensionPath, env: { ...process.env, ZHIYIN_LANG: serverLanguage(vscode.env.language) } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      outputChannel: this.output,
      initializationOptions: {
        maxTokens: config.get<number>("maxTokens", 48),
        contextBudget: config.get<number>("contextBudget", 1024),
        embeddings: config.get<boolean>("embeddings", true),
      },
      initializationFailedHandler: () => false, // the closed handler below says why, in the user's language
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue, handled: true }),
        closed: () => this.onClosed(),
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          if (!this.inlineEnabled || documentLength(document) > maxDocumentChars()) return null;
          const started = Date.now();
          const result = await next(document, position, context, token);
          const items = Array.isArray(result) ? result : result?.items;
          this.output.debug(`inline completion at ${position.line}:${position.character}: ${items?.length ?? 0} items, ${Date.now() - started} ms`);
          if (items && items.length) this.latencyEmitter.fire(Date.now() - started);
          return result;
        },
      },
    };
    this.client = new LanguageClient("zhiyin", vscode.l10n.t("Zhiyin"), serverOptions, clientOptions);
    this.client.registerProposedFeatures();
    this.client.onDidChangeState((e) => {
      if (e.newState === State.Running) this.setState("running");
      else if (e.newState === State.Starting) this.setState("starting");
      else this.setState("stopped");
    });
    this.setState("starting");
    this.explainedFailure = false;
    try {
      await this.client.start();
    } catch (error) {
      this.setState("stopped");
      if (!this.explainedFailure) {
        void this.showWithOutput(vscode.l10n.t("Zhiyin's server could not start: {0}. See the Zhiyin output for details.", String(error)));
      }
    }
  }

  async restart(): Promise<void> {
    this.crashes = [];
    await this.stop();
    await this.start();
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (error) {
        this.output.warn(`stopping the server: ${error}`);
      }
    }
    this.setState("stopped");
  }

  /** Runs a `zhiyin.*` command of the server; undefined (and a message said) when it is not running or fails. */
  async command<T>(name: string, ...args: unknown[]): Promise<T | undefined> {
    if (!this.client || this.state !== "running") {
      void vscode.window.showWarningMessage(vscode.l10n.t("The Zhiyin server is not running. Run \"Zhiyin: Restart the Server\"."));
      return undefined;
    }
    try {
      return await this.client.sendRequest(ExecuteCommandRequest.type, { command: name, arguments: args }) as T;
    } catch (error) {
      // the server's errors are written for the user, in their language ("open a folder first")
      void vscode.window.showErrorMessage(error instanceof ResponseError ? error.message : String(error));
      return undefined;
    }
  }

  /** A custom request to the server (`zhiyin/stats`), or undefined when it is not running. */
  async request<T>(method: string): Promise<T | undefined> {
    if (!this.client || this.state !== "running") return undefined;
    return await this.client.sendRequest<T>(method, null);
  }

  dispose(): void {
    void this.stop();
    this.stateEmitter.dispose();
    this.latencyEmitter.dispose();
  }

  private onClosed() {
    if (this.state !== "running") { // it exited while starting: it would again (no zhiyin in that Python, a bad model)
      this.explainedFailure = true;
      void this.showWithOutput(vscode.l10n.t(
        "Zhiyin's server exited while starting. The Zhiyin output says why; fix it, then run \"Zhiyin: Restart the Server\"."));
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < RESTART_WINDOW_MS);
    this.crashes.push(now);
    if (this.crashes.length > MAX_RESTARTS) {
      void vscode.window.showErrorMessage(vscode.l10n.t(
        "Zhiyin's server stopped {0} times in 3 minutes and will not be restarted. See the Zhiyin output, then run \"Zhiyin: Restart the Server\".",
        this.crashes.length));
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    void vscode.window.showWarningMessage(vscode.l10n.t("Zhiyin's server stopped unexpectedly; restarting it."));
    return { action: CloseAction.Restart, handled: true };
  }

  private async showWithOutput(message: string): Promise<void> {
    const show = vscode.l10n.t("Show Output");
    if (await vscode.window.showErrorMessage(message, show) === show) this.output.show();
  }

  private async explainMissing(message: string): Promise<void> {
    const openSettings = vscode.l10n.t("Open Settings");
    const install = vscode.l10n.t("How to Install");
    const choice = await vscode.window.showErrorMessage(message, openSettings, install);
    if (choice === openSettings) await vscode.commands.executeCommand("workbench.action.openSettings", "zhiyin.");
    else if (choice === install) await vscode.env.openExternal(vscode.Uri.parse(INSTALL_URL));
  }

  private setState(state: ServerState): void {
    this.state = state;
    this.stateEmitter.fire(state);
  }
}

/** Whether `python` can import zhiyin: a Python without it would exit as soon as it started. */
async function hasZhiyin(python: string, cwd: string): Promise<boolean> {
  return await new Promise((resolve) => {
    execFile(python, ["-c", "import zhiyin"], { cwd, timeout: 30_000 }, (error) => resolve(!error));
  });
}

/** The document's length without copying its text (this runs on every keystroke). */
function documentLength(document: vscode.TextDocument): number {
  return document.offsetAt(document.lineAt(document.lineCount - 1).range.end);
}

function maxDocumentChars(): number {
  return vscode.workspace.getConfiguration("zhiyin").get<number>("maxFileSize", 1_000_000);
}

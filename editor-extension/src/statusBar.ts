// The status bar item: model, index progress and completion latency; a click toggles inline
// completions (or, when the server is missing or stopped, offers the fix).
import * as vscode from "vscode";
import { ZhiyinClient } from "./client";
import { StatusState, statusView } from "./statusText";

const POLL_MS = 3000;

interface ServerStats {
  model: string | null;
  model_state: "idle" | "loading" | "ready" | "failed";
  model_error: string | null;
  index_ready: boolean;
}

export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("zhiyin.status", vscode.StatusBarAlignment.Right, 100);
  private readonly state: StatusState = { server: "stopped", inlineEnabled: true };
  private readonly timer: NodeJS.Timeout;
  private readonly subscriptions: vscode.Disposable[] = [];

  constructor(private readonly client: ZhiyinClient) {
    this.item.name = vscode.l10n.t("Zhiyin");
    this.subscriptions.push(
      client.onDidChangeState((server) => {
        this.state.server = server;
        if (server !== "running") { // a new server loads afresh
          this.state.model = this.state.modelState = this.state.modelError = this.state.indexReady = undefined;
        }
        this.render();
      }),
      client.onDidComplete((ms) => { this.state.latencyMs = ms; this.render(); }),
    );
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.render();
    this.item.show();
  }

  setInlineEnabled(enabled: boolean): void {
    this.state.inlineEnabled = enabled;
    this.render();
  }

  private async poll(): Promise<void> {
    try {
      const stats = await this.client.request<ServerStats>("zhiyin/stats");
      if (!stats) return;
      this.state.model = stats.model;
      this.state.modelState = stats.model_state;
      this.state.modelError = stats.model_error;
      this.state.indexReady = stats.index_ready;
      this.render();
    } catch {
      // the server is restarting; the state event says so
    }
  }

  private render(): void {
    const view = statusView(this.state, vscode.l10n);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.warning ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
    this.item.command = view.warning ? "zhiyin.restartServer" : "zhiyin.toggleInlineCompletions";
  }

  dispose(): void {
    clearInterval(this.timer);
    this.subscriptions.forEach((s) => s.dispose());
    this.item.dispose();
  }
}

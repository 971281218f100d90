// The chat panel: a webview that frames the chat page the language server serves (`zhiyin.openChat`),
// connected with the server's token. The page asks the editor to open cited lines; the editor asks
// the page questions about the selection. Edits applied from the chat reach the editor as
// `workspace/applyEdit`, so undo works.
import * as vscode from "vscode";
import { chatHtml } from "./chatHtml";
import { ZhiyinClient } from "./client";

interface ChatAddress {
  url: string; // http://127.0.0.1:PORT/#token=…
  socketUrl: string;
}

interface PageMessage {
  type: string;
  path?: string;
  line?: number;
  uri?: string;
}

export interface Selection {
  path: string; // relative to the workspace
  text: string;
  startLine: number; // 1-based
}

export class ChatPanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | undefined;

  private readonly subscription: vscode.Disposable;

  constructor(private readonly client: ZhiyinClient, private readonly extensionUri: vscode.Uri) {
    // the chat server lives in the language server's process: a restarted server has a new address
    this.subscription = client.onDidChangeState((state) => { if (state === "running") void this.reconnect(); });
  }

  private async reconnect(): Promise<void> {
    if (!this.panel) return;
    const address = await this.client.command<ChatAddress>("zhiyin.openChat");
    if (address && this.panel) this.panel.webview.html = chatHtml(address.url, vscode.env.language);
  }

  async show(): Promise<vscode.WebviewPanel | undefined> {
    if (this.panel) {
      this.panel.reveal(undefined, true);
      return this.panel;
    }
    const address = await this.client.command<ChatAddress>("zhiyin.openChat");
    if (!address) return undefined;
    const panel = vscode.window.createWebviewPanel("zhiyin.chat", vscode.l10n.t("Zhiyin Chat"),
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, retainContextWhenHidden: true });
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, "media", "icon.svg");
    panel.webview.html = chatHtml(address.url, vscode.env.language);
    panel.webview.onDidReceiveMessage((message: PageMessage) => void this.onPageMessage(message));
    panel.onDidDispose(() => { this.panel = undefined; });
    this.panel = panel;
    return panel;
  }

  /** Asks `text` in the chat (opened if it is not), with the editor's selections attached. */
  async ask(text: string, selections: Selection[], path?: string): Promise<void> {
    const panel = await this.show();
    await panel?.webview.postMessage({ type: "ask", text, selections, path });
  }

  private async onPageMessage(message: PageMessage): Promise<void> {
    if (message.type !== "open") return;
    const folder = vscode.workspace.workspaceFolders?.[0];
    const uri = message.uri ? vscode.Uri.parse(message.uri)
      : folder && message.path ? vscode.Uri.joinPath(folder.uri, message.path) : undefined;
    if (!uri) return;
    const line = Math.max(0, (message.line ?? 1) - 1);
    await vscode.window.showTextDocument(uri, {
      viewColumn: vscode.ViewColumn.One, selection: new vscode.Range(line, 0, line, 0) });
  }

  dispose(): void {
    this.subscription.dispose();
    this.panel?.dispose();
  }
}

// Wires the extension up: the language client, the status bar, the chat panel and the commands.
// Each feature lives in its own file; nothing here does work of its own.
import * as vscode from "vscode";
import { ChatPanel, Selection } from "./chatPanel";
import { ZhiyinClient } from "./client";
import { showMemories } from "./memories";
import { editRepository, PROPOSED_SCHEME, ProposedContent } from "./repositoryEdit";
import { reviewWorkingTree } from "./review";
import { StatusBar } from "./statusBar";

export interface ZhiyinApi {
  client: ZhiyinClient;
  chat: ChatPanel;
}

export async function activate(context: vscode.ExtensionContext): Promise<ZhiyinApi> {
  const output = vscode.window.createOutputChannel(vscode.l10n.t("Zhiyin"), { log: true });
  const client = new ZhiyinClient(output, context.extensionPath);
  const status = new StatusBar(client);
  const chat = new ChatPanel(client, context.extensionUri);
  const proposed = new ProposedContent();
  client.inlineEnabled = vscode.workspace.getConfiguration("zhiyin").get<boolean>("inlineCompletions", true);
  status.setInlineEnabled(client.inlineEnabled);

  const command = (name: string, run: (...args: any[]) => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(name, run));
  command("zhiyin.restartServer", () => client.restart());
  command("zhiyin.toggleInlineCompletions", async () => {
    client.inlineEnabled = !client.inlineEnabled;
    status.setInlineEnabled(client.inlineEnabled);
    await vscode.workspace.getConfiguration("zhiyin").update(
      "inlineCompletions", client.inlineEnabled, vscode.ConfigurationTarget.Global);
  });
  command("zhiyin.chat", () => chat.show());
  command("zhiyin.askAboutSelection", async () => {
    const selection = editorSelection();
    const question = await vscode.window.showInputBox({
      title: vscode.l10n.t("Zhiyin: Ask About the Selection"), prompt: vscode.l10n.t("Your question about the selected code") });
    if (question?.trim()) await chat.ask(question, selection ? [selection] : [], selection?.path);
  });
  command("zhiyin.explainSelection", async () => {
    const selection = editorSelection();
    await chat.ask(vscode.l10n.t("Explain what this code does."), selection ? [selection] : [], selection?.path);
  });
  command("zhiyin.fixSelection", async () => {
    const selection = editorSelection();
    await chat.ask(vscode.l10n.t("Find the bugs in this code and show the fix."), selection ? [selection] : [], selection?.path);
  });
  command("zhiyin.editWithInstruction", () => editRepository(client, proposed));
  command("zhiyin.rememberSelection", async () => {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.selection.isEmpty) {
      void vscode.window.showInformationMessage(vscode.l10n.t("Select the code that shows the convention first."));
      return;
    }
    const { start, end } = editor.selection;
    await client.command("zhiyin.rememberConvention", editor.document.uri.toString(),
      { start: { line: start.line, character: start.character }, end: { line: end.line, character: end.character } });
  });
  command("zhiyin.reviewChanges", () => reviewWorkingTree(client));
  command("zhiyin.showMemories", () => showMemories(client));

  context.subscriptions.push(
    client, status, chat,
    vscode.workspace.registerTextDocumentContentProvider(PROPOSED_SCHEME, proposed),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (["zhiyin.pythonPath", "zhiyin.serverPath", "zhiyin.model", "zhiyin.maxTokens", "zhiyin.contextBudget",
        "zhiyin.embeddings"].some((key) => e.affectsConfiguration(key))) await client.restart();
    }),
  );
  await client.start();
  return { client, chat };
}

export function deactivate(): void {
  // the subscriptions stop the server
}

/** The active editor's selection (its whole line when nothing is selected), for the chat. */
function editorSelection(): Selection | undefined {
  const editor = vscode.window.activeTextEditor;
  if (!editor) return undefined;
  const range = editor.selection.isEmpty ? editor.document.lineAt(editor.selection.active.line).range : editor.selection;
  return { path: vscode.workspace.asRelativePath(editor.document.uri, false), text: editor.document.getText(range),
    startLine: range.start.line + 1 };
}

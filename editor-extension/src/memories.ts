// "Show memories": the project memory's conventions, decisions and past fixes in a quick pick;
// picking one opens the code it cites.
import * as vscode from "vscode";
import { ZhiyinClient } from "./client";

interface Citation {
  source: string;
  file?: string;
  start_line?: number;
  commit?: string;
}

interface Memory {
  id: number;
  kind: string;
  statement: string;
  status: string;
  citations: Citation[];
}

interface MemoryItem extends vscode.QuickPickItem {
  citation?: Citation;
}

export async function showMemories(client: ZhiyinClient): Promise<void> {
  const memories = await client.command<Memory[]>("zhiyin.listMemories");
  if (!memories) return;
  if (!memories.length) {
    void vscode.window.showInformationMessage(vscode.l10n.t(
      "The project memory is empty. Select code and run \"Zhiyin: Remember as a Convention\" to add one."));
    return;
  }
  const items: MemoryItem[] = memories.map((m) => {
    const cited = m.citations.find((c) => c.file);
    return {
      label: `#${m.id} ${m.statement}`,
      description: `${m.kind}${m.status === "active" ? "" : " · " + m.status}`,
      detail: m.citations.map((c) => c.file ? `${c.file}:${c.start_line ?? 1}` : c.commit ?? c.source).filter(Boolean).join(", "),
      citation: cited,
    };
  });
  const picked = await vscode.window.showQuickPick(items, {
    title: vscode.l10n.t("Zhiyin: Project Memory ({0})", memories.length), matchOnDetail: true });
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (!picked?.citation?.file || !folder) return;
  const line = Math.max(0, (picked.citation.start_line ?? 1) - 1);
  await vscode.window.showTextDocument(vscode.Uri.joinPath(folder.uri, picked.citation.file),
    { selection: new vscode.Range(line, 0, line, 0) });
}

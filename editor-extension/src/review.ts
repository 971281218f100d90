// "Review my changes": the server reviews the uncommitted changes (conventions, past fixes,
// optionally the model) and publishes the findings as diagnostics; the Problems view shows them.
import * as vscode from "vscode";
import { ZhiyinClient } from "./client";

interface ReviewSummary {
  findings: number;
  files: number;
  message: string;
  skipped: Array<{ path: string; reason: string }>;
}

export async function reviewWorkingTree(client: ZhiyinClient): Promise<ReviewSummary | undefined> {
  const model = vscode.workspace.getConfiguration("zhiyin").get<boolean>("reviewWithModel", false);
  const summary = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: vscode.l10n.t("Zhiyin is reviewing your changes…") },
    () => client.command<ReviewSummary>("zhiyin.reviewWorkingTree", { model }));
  if (!summary) return undefined;
  const skipped = summary.skipped.length
    ? " " + vscode.l10n.t("Skipped: {0}", summary.skipped.map((s) => `${s.path} (${s.reason})`).join(", ")) : "";
  if (summary.findings) {
    await vscode.commands.executeCommand("workbench.actions.view.problems");
    void vscode.window.showWarningMessage(summary.message + skipped);
  } else {
    void vscode.window.showInformationMessage(summary.message + skipped);
  }
  return summary;
}

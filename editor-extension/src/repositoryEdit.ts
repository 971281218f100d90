// "Edit the repository": the server plans the edit (`zhiyin.proposeEdits`), each changed file opens
// as a diff, and only on the user's word is it applied (`zhiyin.applyEdits`, which comes back as a
// `workspace/applyEdit`, so undo works).
import * as vscode from "vscode";
import { ZhiyinClient } from "./client";

export const PROPOSED_SCHEME = "zhiyin-proposed";

interface Preview {
  path: string;
  uri: string;
  newText: string;
}

interface ProposedPlan {
  instruction: string;
  edits: unknown[];
  problems: Record<string, string>;
  previews: Preview[];
}

/** Serves the proposed text of each file to the diff editors. */
export class ProposedContent implements vscode.TextDocumentContentProvider {
  private readonly texts = new Map<string, string>();

  set(path: string, text: string): vscode.Uri {
    const uri = vscode.Uri.from({ scheme: PROPOSED_SCHEME, path: "/" + path });
    this.texts.set(uri.toString(), text);
    return uri;
  }

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.toString()) ?? "";
  }
}

export async function editRepository(client: ZhiyinClient, proposed: ProposedContent): Promise<void> {
  const instruction = await vscode.window.showInputBox({
    title: vscode.l10n.t("Zhiyin: Edit the Repository"),
    prompt: vscode.l10n.t("What should change? For example: rename parse_config to load_config"),
    ignoreFocusOut: true,
  });
  if (!instruction?.trim()) return;
  const plan = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: vscode.l10n.t("Zhiyin is planning the edit…") },
    () => client.command<ProposedPlan>("zhiyin.proposeEdits", instruction.trim()));
  if (!plan) return;
  if (!plan.previews.length) {
    const problems = Object.entries(plan.problems).map(([path, why]) => `${path}: ${why}`).join("; ");
    void vscode.window.showInformationMessage(problems
      ? vscode.l10n.t("Zhiyin found nothing to change: {0}", problems)
      : vscode.l10n.t("Zhiyin found nothing to change."));
    return;
  }
  for (const preview of plan.previews) {
    const right = proposed.set(preview.path, preview.newText);
    await vscode.commands.executeCommand("vscode.diff", vscode.Uri.parse(preview.uri), right,
      vscode.l10n.t("{0} (proposed by Zhiyin)", preview.path), { preview: false });
  }
  const apply = vscode.l10n.t("Apply");
  const choice = await vscode.window.showInformationMessage(
    vscode.l10n.t("Apply Zhiyin's edit to {0} files?", plan.previews.length), apply,
    vscode.l10n.t("Discard"));
  if (choice === apply) await client.command("zhiyin.applyEdits", plan); // the server says how it went
  await closeProposals();
}

/** Closes the diff editors of a proposal once it is applied or discarded. */
async function closeProposals(): Promise<void> {
  const tabs = vscode.window.tabGroups.all.flatMap((group) => group.tabs).filter((tab) =>
    tab.input instanceof vscode.TabInputTextDiff && tab.input.modified.scheme === PROPOSED_SCHEME);
  await vscode.window.tabGroups.close(tabs);
}

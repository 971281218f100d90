// What the status bar item says: a pure function of the client's state, tested without an editor.

export type ServerState = "starting" | "running" | "stopped" | "missing";

export interface StatusState {
  server: ServerState;
  inlineEnabled: boolean;
  model?: string | null;
  modelState?: "idle" | "loading" | "ready" | "failed";
  modelError?: string | null;
  indexReady?: boolean;
  latencyMs?: number; // of the last inline completion the server answered
}

export interface StatusView {
  text: string;
  tooltip: string;
  warning: boolean;
}

/** vscode.l10n in the editor; any translator in tests. */
export interface L10n {
  t(message: string, ...args: Array<string | number>): string;
}

export function statusView(state: StatusState, l10n: L10n): StatusView {
  const lines: string[] = [];
  let icon = "$(sparkle)";
  let detail = "";
  if (state.server === "missing") {
    return { text: "$(error) " + l10n.t("Zhiyin"), tooltip: l10n.t("The Zhiyin server is not installed. Click for the fix."), warning: true };
  }
  if (state.server === "stopped") {
    return { text: "$(debug-disconnect) " + l10n.t("Zhiyin"), tooltip: l10n.t("The Zhiyin server stopped. Click to restart it."), warning: true };
  }
  if (state.server === "starting") {
    icon = "$(sync~spin)";
    lines.push(l10n.t("Starting the Zhiyin server…"));
  } else if (state.modelState === "failed") {
    return { text: "$(error) " + l10n.t("Zhiyin") + " · " + l10n.t("no model"),
      tooltip: (state.modelError ?? "") + "\n" + l10n.t("Set \"zhiyin.model\", then click to restart the server."), warning: true };
  } else if (state.modelState === "idle") {
    lines.push(l10n.t("The model loads when you open a file."));
  } else if (!state.model) {
    icon = "$(sync~spin)";
    detail = l10n.t("loading the model");
    lines.push(l10n.t("Loading the model…"));
  } else {
    lines.push(l10n.t("Model: {0}", state.model));
    if (state.indexReady === false) {
      icon = "$(sync~spin)";
      detail = l10n.t("indexing");
      lines.push(l10n.t("Indexing the repository…"));
    } else if (state.latencyMs !== undefined) {
      detail = `${Math.round(state.latencyMs)} ms`;
      lines.push(l10n.t("Last completion: {0} ms", Math.round(state.latencyMs)));
    }
  }
  if (!state.inlineEnabled) {
    icon = "$(circle-slash)";
    lines.push(l10n.t("Inline completions are off. Click to turn them on."));
  } else {
    lines.push(l10n.t("Click to turn inline completions off."));
  }
  const text = `${icon} ${l10n.t("Zhiyin")}` + (detail ? ` · ${detail}` : "");
  return { text, tooltip: lines.join("\n"), warning: false };
}

// How the language server is started: pure functions of the settings, tested without an editor.
import * as fs from "fs";
import * as path from "path";

export interface ServerSettings {
  /** Python interpreter with zhiyin installed; when set, runs `python -m zhiyin lsp`. */
  pythonPath: string;
  /** The `zhiyin` command, used when pythonPath is empty. */
  serverPath: string;
  /** A model name from `zhiyin model list`, or a GGUF file or Hugging Face folder; empty: the configured one. */
  model: string;
}

export interface ServerCommand {
  command: string;
  args: string[];
}

export function serverCommand(settings: ServerSettings): ServerCommand {
  const model = settings.model.trim() ? ["--model", settings.model.trim()] : [];
  const python = settings.pythonPath.trim();
  if (python) return { command: python, args: ["-m", "zhiyin", "lsp", ...model] };
  return { command: settings.serverPath.trim() || "zhiyin", args: ["lsp", ...model] };
}

/** The executable `command` names: itself when it is a path, else the first match on PATH. */
export function findExecutable(command: string, envPath = process.env.PATH ?? "",
                               exists: (file: string) => boolean = isExecutable): string | undefined {
  if (command.includes("/") || command.includes("\\")) return exists(command) ? command : undefined;
  for (const folder of envPath.split(path.delimiter)) {
    if (!folder) continue;
    const candidate = path.join(folder, command);
    if (exists(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The server's language setting from the editor's display language: "zh-cn" → "zh_CN". */
export function serverLanguage(editorLanguage: string): string {
  const [lang, region] = editorLanguage.split(/[-_]/);
  return region ? `${lang.toLowerCase()}_${region.toUpperCase()}` : lang.toLowerCase();
}

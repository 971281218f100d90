// Every string a user reads exists in Chinese: the manifest's %keys%, and each vscode.l10n.t message.
import * as assert from "assert/strict";
import * as fs from "fs";
import * as path from "path";

const root = path.join(__dirname, "../../..");
const read = (file: string) => JSON.parse(fs.readFileSync(path.join(root, file), "utf8"));

function messagesInSources(): string[] {
  const found = new Set<string>();
  for (const file of fs.readdirSync(path.join(root, "src"))) {
    const source = fs.readFileSync(path.join(root, "src", file), "utf8");
    for (const match of source.matchAll(/l10n\.t\(\s*"((?:[^"\\]|\\.)*)"/g)) found.add(JSON.parse(`"${match[1]}"`));
  }
  return [...found];
}

describe("localization", () => {
  it("translates every manifest string, and uses every translation", () => {
    const manifest = fs.readFileSync(path.join(root, "package.json"), "utf8");
    const keys = [...manifest.matchAll(/"%([\w.]+)%"/g)].map((m) => m[1]);
    const english = read("package.nls.json");
    const chinese = read("package.nls.zh-cn.json");
    assert.ok(keys.length >= 20);
    for (const key of keys) {
      assert.ok(english[key], `package.nls.json lacks ${key}`);
      assert.match(chinese[key] ?? "", /[\u4e00-\u9fff]/, `package.nls.zh-cn.json lacks ${key}`);
    }
    assert.deepEqual(Object.keys(chinese).sort(), Object.keys(english).sort());
    assert.deepEqual(Object.keys(english).filter((k) => !keys.includes(k)), []);
  });

  it("translates every message of the code, with the same placeholders", () => {
    const bundle: Record<string, string> = read("l10n/bundle.l10n.zh-cn.json");
    const messages = messagesInSources();
    assert.ok(messages.length >= 30);
    for (const message of messages) {
      const translated = bundle[message];
      assert.ok(translated, `l10n/bundle.l10n.zh-cn.json lacks: ${message}`);
      const placeholders = (text: string) => [...text.matchAll(/\{\d+\}/g)].map((m) => m[0]).sort();
      assert.deepEqual(placeholders(translated), placeholders(message), message);
    }
    assert.deepEqual(Object.keys(bundle).filter((k) => !messages.includes(k)), [], "translations no code uses");
  });
});

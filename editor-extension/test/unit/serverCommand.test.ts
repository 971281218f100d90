import * as assert from "assert/strict";
import * as path from "path";
import { findExecutable, serverCommand, serverLanguage } from "../../src/serverCommand";

describe("serverCommand", () => {
  it("runs python -m zhiyin lsp when a Python is set, else the zhiyin command", () => {
    assert.deepEqual(serverCommand({ pythonPath: "/venv/bin/python", serverPath: "zhiyin", model: "" }),
      { command: "/venv/bin/python", args: ["-m", "zhiyin", "lsp"] });
    assert.deepEqual(serverCommand({ pythonPath: "  ", serverPath: "", model: "" }), { command: "zhiyin", args: ["lsp"] });
    assert.deepEqual(serverCommand({ pythonPath: "", serverPath: "/opt/zhiyin", model: " qwen.gguf " }),
      { command: "/opt/zhiyin", args: ["lsp", "--model", "qwen.gguf"] });
  });

  it("finds a command on PATH, or a path as given", () => {
    const exists = (file: string) => file === path.join("/b", "zhiyin") || file === "/opt/zhiyin";
    assert.equal(findExecutable("zhiyin", ["/a", "", "/b"].join(path.delimiter), exists), path.join("/b", "zhiyin"));
    assert.equal(findExecutable("zhiyin", "/a", exists), undefined);
    assert.equal(findExecutable("/opt/zhiyin", "", exists), "/opt/zhiyin");
    assert.equal(findExecutable("/opt/other", "/opt", exists), undefined);
    assert.match(findExecutable("sh") ?? "", /\/sh$/); // the real PATH and file system
    assert.equal(findExecutable("/etc"), undefined); // there, but a folder
  });

  it("maps the editor's language to the server's locale", () => {
    assert.equal(serverLanguage("zh-cn"), "zh_CN");
    assert.equal(serverLanguage("en"), "en");
    assert.equal(serverLanguage("pt-BR"), "pt_BR");
  });
});

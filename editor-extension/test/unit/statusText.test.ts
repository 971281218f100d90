import * as assert from "assert/strict";
import * as fs from "fs";
import * as path from "path";
import { L10n, statusView } from "../../src/statusText";

const english: L10n = { t: (message, ...args) => message.replace(/\{(\d+)\}/g, (_m, i) => String(args[Number(i)])) };
const zhBundle: Record<string, string> = JSON.parse(
  fs.readFileSync(path.join(__dirname, "../../../l10n/bundle.l10n.zh-cn.json"), "utf8"));
const chinese: L10n = { t: (message, ...args) => english.t(zhBundle[message] ?? `MISSING(${message})`, ...args) };

describe("statusView", () => {
  it("names the model and the last completion's latency", () => {
    const view = statusView({ server: "running", inlineEnabled: true, model: "SmolLM2", modelState: "ready",
      indexReady: true, latencyMs: 812.4 }, english);
    assert.equal(view.text, "$(sparkle) Zhiyin · 812 ms");
    assert.match(view.tooltip, /Model: SmolLM2\nLast completion: 812 ms\nClick to turn inline completions off\./);
    assert.equal(view.warning, false);
  });

  it("shows indexing and loading with a spinner", () => {
    assert.equal(statusView({ server: "running", inlineEnabled: true, model: "m", modelState: "ready", indexReady: false },
      english).text, "$(sync~spin) Zhiyin · indexing");
    assert.equal(statusView({ server: "running", inlineEnabled: true, model: null, modelState: "loading" }, english).text,
      "$(sync~spin) Zhiyin · loading the model");
    assert.equal(statusView({ server: "starting", inlineEnabled: true }, english).text, "$(sync~spin) Zhiyin");
  });

  it("warns when the server is missing, stopped, or has no model", () => {
    for (const server of ["missing", "stopped"] as const) {
      assert.equal(statusView({ server, inlineEnabled: true }, english).warning, true);
    }
    const failed = statusView({ server: "running", inlineEnabled: true, model: null, modelState: "failed",
      modelError: "Zhiyin cannot load the model: no such file" }, english);
    assert.equal(failed.text, "$(error) Zhiyin · no model");
    assert.match(failed.tooltip, /no such file\nSet "zhiyin.model"/);
  });

  it("says when inline completions are off", () => {
    const view = statusView({ server: "running", inlineEnabled: false, model: "m", modelState: "ready" }, english);
    assert.ok(view.text.startsWith("$(circle-slash)"));
    assert.match(view.tooltip, /Inline completions are off/);
  });

  it("reads in Chinese with the zh-cn bundle", () => {
    const view = statusView({ server: "running", inlineEnabled: true, model: "SmolLM2", modelState: "ready",
      indexReady: false }, chinese);
    assert.equal(view.text, "$(sync~spin) 知音 · 索引中");
    assert.equal(view.tooltip, "模型：SmolLM2\n正在为仓库建立索引…\n点击关闭行内补全。");
  });
});

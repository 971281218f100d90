// The chat webview's page, a pure function of the chat address (tested without an editor).
import * as crypto from "crypto";

/** The webview's page: the chat page in a frame, and a relay between the frame and the extension. */
export function chatHtml(pageUrl: string, language: string): string {
  const url = new URL(pageUrl);
  const fragment = new URLSearchParams(url.hash.slice(1));
  fragment.set("lang", language);
  url.hash = fragment.toString();
  const origin = url.origin;
  const nonce = crypto.randomBytes(16).toString("base64");
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; frame-src ${origin}; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}';">
<style nonce="${nonce}">html, body, iframe { margin: 0; padding: 0; border: 0; width: 100%; height: 100%; overflow: hidden; }</style>
</head><body>
<iframe id="chat" src="${escapeAttribute(url.toString())}" allow="clipboard-write"></iframe>
<script nonce="${nonce}">
const vscode = acquireVsCodeApi();
const frame = document.getElementById("chat");
const origin = ${JSON.stringify(origin)};
let ready = false;
const waiting = [];
window.addEventListener("message", (event) => {
  if (event.source === frame.contentWindow) {
    if (event.origin !== origin) return;
    if (event.data && event.data.type === "ready") {
      ready = true;
      for (const m of waiting.splice(0)) frame.contentWindow.postMessage(m, origin);
    }
    vscode.postMessage(event.data);
  } else if (event.data && event.data.type === "ask") {
    if (ready) frame.contentWindow.postMessage(event.data, origin);
    else waiting.push(event.data);
  }
});
</script>
</body></html>`;
}

function escapeAttribute(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

import * as assert from "assert/strict";
import { chatHtml } from "../../src/chatHtml";

describe("chatHtml", () => {
  const html = chatHtml("http://127.0.0.1:8731/#token=abc-DEF_1", "zh-cn");

  it("frames the server's page with the token and the editor's language in the fragment", () => {
    assert.match(html, /<iframe id="chat" src="http:\/\/127\.0\.0\.1:8731\/#token=abc-DEF_1&amp;lang=zh-cn"/);
  });

  it("allows only that page in a frame and only its own nonce'd script", () => {
    const csp = html.match(/content="([^"]+)"/)![1];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-src http:\/\/127\.0\.0\.1:8731;/);
    const nonce = csp.match(/script-src 'nonce-([^']+)'/)![1];
    assert.equal(html.match(new RegExp(`<script nonce="${nonce.replace(/[+/]/g, "\\$&")}">`, "g"))!.length, 1);
    assert.notEqual(chatHtml("http://127.0.0.1:1/#token=x", "en").match(/nonce-([^']+)/)![1], nonce);
  });

  it("relays only messages from the frame's origin to the extension", () => {
    assert.match(html, /const origin = "http:\/\/127\.0\.0\.1:8731";/);
    assert.match(html, /if \(event\.origin !== origin\) return;/);
  });
});

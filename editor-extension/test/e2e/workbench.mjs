// What the tests read and do in the workbench: the status bar item, ghost text, notifications, the chat frame.
import { eventually } from "./vscode.mjs";

const STATUS_ITEM = "#workbench\\.parts\\.statusbar .statusbar-item";

/** The aria label of Zhiyin's status bar item: its text and tooltip. */
export async function zhiyinStatus(page) {
  const labels = await page.locator(STATUS_ITEM).evaluateAll((items) => items.map((i) => i.getAttribute("aria-label") ?? ""));
  return labels.find((l) => /Zhiyin|知音/.test(l) && !/Layout/.test(l)) ?? "";
}

export async function waitForModel(page, timeoutMs = 120_000) {
  return await eventually(async () => {
    const status = await zhiyinStatus(page);
    return /Model: |模型：/.test(status) ? status : null;
  }, timeoutMs, "the status bar to name the model");
}

/** Types `text` at the end of the open editor, on a new line. */
export async function typeAtEnd(page, text) {
  await page.keyboard.press("Control+End");
  await page.keyboard.press("Enter");
  await page.keyboard.press("Enter");
  await page.keyboard.type(text, { delay: 40 });
}

/** Waits for ghost text, asking again (Alt+\) now and then as a user pausing would get it;
 * answers the cursor line as rendered, ghost text included. */
export async function waitForGhostText(page, timeoutMs = 120_000) {
  let polls = 0;
  return await eventually(async () => {
    if (++polls % 16 === 0) await page.keyboard.press("Alt+Backslash");
    return await page.evaluate(() => {
      const ghost = document.querySelector(".monaco-editor .ghost-text-decoration");
      const line = ghost?.closest(".view-line");
      return line ? { ghost: ghost.textContent, line: line.textContent.replace(/\u00a0/g, " ") } : null;
    });
  }, timeoutMs, "ghost text");
}

/** The text of the notification toasts on screen. */
export async function notifications(page) {
  return (await page.locator(".notifications-toasts .notification-list-item-message").allTextContents()).join("\n");
}

export async function waitForNotification(page, pattern, timeoutMs = 60_000) {
  return await eventually(async () => {
    const text = await notifications(page);
    return pattern.test(text) ? text : null;
  }, timeoutMs, `a notification matching ${pattern}`);
}

/** The chat page's frame inside the chat webview. */
export async function chatFrame(page, timeoutMs = 60_000) {
  return await eventually(async () => {
    const frame = page.frames().find((f) => f.url().includes("#token="));
    if (!frame) return null;
    return (await frame.locator("#input").count()) ? frame : null;
  }, timeoutMs, "the chat page in its webview");
}

/** Asks in the chat and samples the answer while it streams: {samples, text}. */
export async function askInChat(frame, question, timeoutMs = 180_000) {
  const before = await frame.locator(".message.assistant").count();
  await frame.locator("#input").fill(question);
  await frame.locator("#send").click();
  const seen = new Set();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const answers = frame.locator(".message.assistant");
    if ((await answers.count()) > before) {
      const last = answers.last();
      const streaming = await last.evaluate((el) => el.classList.contains("streaming"));
      const text = await last.locator(".body").innerText();
      if (text.trim()) seen.add(text.length);
      if (!streaming) return { samples: seen.size, text };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the chat answer did not finish");
}

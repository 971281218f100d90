// Drives the real chat page in headless Chromium against a running `zhiyin serve`.
// Usage: node chat_page.mjs PAGE_URL SCREENSHOT_DIR; prints one JSON report on stdout.
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
const report = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 800 }, locale: "en-US" });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

async function step(name, fn) {
  try { report[name] = await fn(); } catch (e) {
    report[name] = { error: String(e) };
    await page.screenshot({ path: `${shots}/failed-${name}.png` }).catch(() => {});
  }
}

async function ask(text) {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

// Samples the answer as it streams: distinct lengths seen before it ends.
async function watchAnswer(timeoutMs) {
  const seen = new Set();
  const deadline = Date.now() + timeoutMs;
  await page.waitForSelector(".message.assistant.streaming", { timeout: 10000 });
  while (Date.now() < deadline) {
    const state = await page.evaluate(() => {
      const all = document.querySelectorAll(".message.assistant");
      const last = all[all.length - 1];
      return { streaming: last.classList.contains("streaming"), text: last.querySelector(".body").innerText };
    });
    seen.add(state.text.length);
    if (!state.streaming) return { samples: seen.size, text: state.text };
    await page.waitForTimeout(40);
  }
  throw new Error("the answer did not finish");
}

await step("load", async () => {
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("Ready"), null,
                             { timeout: 180000 });
  return { status: await page.textContent("#status"), title: await page.title(),
           send: await page.textContent("#send") };
});

await step("question", async () => {
  await ask("What does the function load_config in shop/config.py return?");
  const answer = await watchAnswer(120000);
  const citations = await page.$$eval(".message.assistant:last-of-type .citation", (as) => as.map((a) => a.textContent));
  await page.click(".message.assistant:last-of-type .citation >> nth=0");
  await page.waitForSelector("#source:not([hidden])");
  const source = { title: await page.textContent("#source-title"), code: await page.textContent("#source-code") };
  await page.screenshot({ path: `${shots}/answer-with-citations.png` });
  return { ...answer, citations, source };
});

await step("stop", async () => {
  await page.click("#new-chat");
  await ask("Write a very long essay about the history of databases.");
  await page.waitForFunction(() => {
    const all = document.querySelectorAll(".message.assistant");
    return all.length && all[all.length - 1].querySelector(".body").innerText.length > 20;
  }, null, { timeout: 60000 });
  await page.click("#stop");
  const answer = await watchAnswer(30000);
  await page.screenshot({ path: `${shots}/stopped.png` });
  return { text: answer.text, stopVisible: await page.isVisible("#stop") };
});

await step("edit", async () => {
  await page.click("#new-chat");
  await ask("/edit rename load_config to read_config");
  await page.waitForSelector(".edit .apply", { timeout: 120000 });
  const files = await page.$$eval(".edit .file-name", (els) => els.map((e) => e.textContent));
  const added = await page.$$eval(".edit .diff .add", (els) => els.map((e) => e.textContent));
  await page.screenshot({ path: `${shots}/proposed-edit.png` });
  await page.click(".edit .apply");
  await page.waitForFunction(() => document.querySelector(".edit .outcome").textContent.length > 0, null,
                             { timeout: 30000 });
  await page.screenshot({ path: `${shots}/applied-edit.png` });
  return { files, added, outcome: await page.textContent(".edit .outcome") };
});

await step("chinese", async () => {
  await page.selectOption("#language", "zh-CN");
  await page.waitForFunction(() => document.querySelector("#send").textContent === "发送", null, { timeout: 10000 });
  await page.click("#new-chat");
  await ask("load_config 返回什么？");
  const answer = await watchAnswer(120000);
  await page.selectOption("#theme", "dark");
  await page.screenshot({ path: `${shots}/chinese-dark.png` });
  return { send: await page.textContent("#send"), newChat: await page.textContent("#new-chat"),
           lang: await page.getAttribute("html", "lang"), theme: await page.getAttribute("html", "data-theme"),
           conversations: await page.$$eval("#conversations li a", (as) => as.length), answer: answer.text };
});

report.errors = errors;
console.log(JSON.stringify(report));
await browser.close();

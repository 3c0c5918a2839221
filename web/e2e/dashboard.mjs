// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core, against a running prebuildd. Run by the Rust test
// tests/dashboard/main.rs, which starts the server, makes the objects named
// in the environment, and answers the handshake below.
//
// Environment:
//   DASHBOARD_URL        the server's base URL (http://127.0.0.1:PORT)
//   API_KEY              a valid API key of the organization
//   COMPLETED_PREBUILD   a COMPLETED prebuild (the pool's snapshot)
//   FAILED_PREBUILD      a FAILED prebuild
//   WARNED_PREBUILD      a prebuild COMPLETED with a warning
//   WARM_POOL            a warm pool (min 1, max 1) of that prebuild's project and class
//   OTHER_PROJECT        a project with no COMPLETED prebuild
//   REMOTE_RUNNER        a remote runner with one member connected
//   RUNNER_MEMBER        that member's name
//   CHROMIUM             the browser (default /usr/bin/chromium)
//   SCREENSHOT_DIR       if set, a PNG of each step goes there
//
// Handshake: once signed in, the script prints "READY" on stdout and reads one
// line from stdin: the ID of a new prebuild that runs slowly (and never ends
// by itself), so the script sees it appear in the list and its log grow.
// Ends with "PASS" on stdout and exit code 0, or an error and exit code 1.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("DASHBOARD_URL").replace(/\/$/, "");
const apiKey = env("API_KEY");
const completedId = env("COMPLETED_PREBUILD");
const failedId = env("FAILED_PREBUILD");
const warnedId = env("WARNED_PREBUILD");
const poolId = env("WARM_POOL");
const otherProject = env("OTHER_PROJECT");
const remoteRunner = env("REMOTE_RUNNER");
const runnerMember = env("RUNNER_MEMBER");
const executablePath = env("CHROMIUM", "/usr/bin/chromium");
const screenshotDir = process.env.SCREENSHOT_DIR;

/** How long one expectation may take before the test fails. */
const PATIENCE_MS = 30_000;

const log = (message) => process.stderr.write(`e2e: ${message}\n`);
const fail = (message) => {
  throw new Error(message);
};

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function readLine() {
  const { value, done } = await stdinLines.next();
  if (done) fail("stdin closed before the handshake answer");
  return value.trim();
}

/** Polls `check` (a function returning a truthy value when satisfied). */
async function until(what, check, patience = PATIENCE_MS) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch (error) {
      last = error;
    }
    if (Date.now() - started > patience) {
      fail(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
let step = 0;
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const shot = async (name) => {
    if (!screenshotDir) return;
    mkdirSync(screenshotDir, { recursive: true });
    step += 1;
    await page.screenshot({ path: join(screenshotDir, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
  };

  // Nothing may be fetched from anywhere but the server itself.
  const origin = new URL(base).origin;
  const foreign = [];
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  // The page's Content-Security-Policy must not block any of its own parts.
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/.test(message.text())) pageErrors.push(message.text());
  });

  // --- sign in ---------------------------------------------------------------
  log("open /ui");
  const response = await page.goto(`${base}/ui`);
  if (!response || !response.ok()) fail(`/ui answered ${response?.status()}`);
  if (new URL(page.url()).pathname !== "/ui/") fail(`/ui did not end at /ui/ but at ${page.url()}`);
  await page.getByLabel("API key").fill("not-a-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await until("the wrong key's error", async () => /unauthenticated/.test((await page.getByRole("alert").textContent()) ?? ""));
  await shot("wrong-key");
  await page.getByLabel("API key").fill(apiKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Prebuilds" }).waitFor({ timeout: PATIENCE_MS });
  const stored = await page.evaluate(() => sessionStorage.getItem("prebuildd.apiKey"));
  if (stored !== apiKey) fail(`the key is not in session storage: ${stored}`);
  if ((await context.cookies()).length !== 0 || (await page.evaluate(() => document.cookie)) !== "") {
    fail("the dashboard set a cookie");
  }

  // --- the list, and its filters ---------------------------------------------
  const completedRow = page.locator(`tr[data-prebuild-id="${completedId}"]`);
  await completedRow.waitFor({ timeout: PATIENCE_MS });
  const rowText = await completedRow.textContent();
  // The project and class by name (prebuildd.v1.CatalogService), the
  // official trigger with what started it (prebuildd.v1.PrebuildSourceService).
  for (const expected of ["COMPLETED", "MANUAL", "(api)", "backend", "fast"]) {
    if (!rowText.includes(expected)) fail(`the completed prebuild's row lacks ${expected}: ${rowText}`);
  }
  const failedRow = page.locator(`tr[data-prebuild-id="${failedId}"]`);
  await failedRow.waitFor({ timeout: PATIENCE_MS });
  log("filter by phase");
  await page.getByLabel("Phase").selectOption({ label: "FAILED" });
  await until("only the failed prebuild", async () => (await completedRow.count()) === 0 && (await failedRow.count()) === 1);
  if (!page.url().includes("phase=")) fail(`the phase filter is not in the URL: ${page.url()}`);
  await page.getByLabel("Phase").selectOption({ label: "CANCELLED" });
  await page.getByText("No prebuilds match.").waitFor({ timeout: PATIENCE_MS });
  await page.getByLabel("Phase").selectOption({ label: "COMPLETED" });
  await until("the completed prebuilds only", async () => (await completedRow.count()) === 1 && (await failedRow.count()) === 0);
  await page.getByLabel("Phase").selectOption({ label: "any phase" });
  log("filter by project");
  await page.getByLabel("Project").fill(otherProject);
  await page.getByRole("button", { name: "Apply" }).click();
  await page.getByText("No prebuilds match.").waitFor({ timeout: PATIENCE_MS });
  await page.getByLabel("Project").fill("");
  await page.getByRole("button", { name: "Apply" }).click();
  await completedRow.waitFor({ timeout: PATIENCE_MS });
  await shot("list");

  // --- a running prebuild: it appears, its log grows, it is cancelled -------
  process.stdout.write("READY\n");
  const runningId = await readLine();
  log(`running prebuild ${runningId}`);
  const runningRow = page.locator(`tr[data-prebuild-id="${runningId}"]`);
  await runningRow.waitFor({ timeout: PATIENCE_MS });
  const order = await page.locator("tr[data-prebuild-id]").evaluateAll((rows) => rows.map((row) => row.dataset.prebuildId));
  const newestFirst = [runningId, completedId, warnedId, failedId];
  if (order.join() !== newestFirst.join()) fail(`the list is not newest first: ${order}, expected ${newestFirst}`);
  await runningRow.getByRole("link").click();
  await page.waitForURL(`**/ui/prebuilds/${runningId}`);

  const lines = async () => Number(((await page.getByTestId("log-lines").textContent()) ?? "").split(" ")[0]);
  const phase = async () => (await page.getByTestId("phase").textContent()) ?? "";
  const first = await until("the first log lines", async () => {
    const n = await lines();
    return n > 0 ? n : 0;
  });
  log(`log has ${first} line(s), phase ${await phase()}`);
  await shot("log-first");
  const grown = await until("the log to grow", async () => {
    const n = await lines();
    return n > first ? n : 0;
  });
  const phaseWhileGrowing = await phase();
  if (!["STARTING", "RUNNING"].includes(phaseWhileGrowing)) fail(`the log grew but the phase is ${phaseWhileGrowing}`);
  const state = (await page.getByTestId("log-state").textContent()) ?? "";
  if (state !== "live") fail(`the log of a running prebuild is not live but "${state}"`);
  log(`log grew to ${grown} lines while ${phaseWhileGrowing}`);
  await shot("log-grown");

  log("cancel");
  await page.getByRole("button", { name: "Cancel" }).click();
  await until("the prebuild to be CANCELLED", async () => (await phase()) === "CANCELLED");
  await until("the log to be complete", async () => (await page.getByTestId("log-state").textContent()) === "complete");
  const cancelledLog = (await page.getByTestId("log").textContent()) ?? "";
  if (!cancelledLog.includes("[simulated] stopped")) fail(`the cancelled prebuild's log lacks its last line:\n${cancelledLog}`);
  if (!(await page.getByRole("button", { name: "Cancel" }).isDisabled())) fail("Cancel is still enabled on a cancelled prebuild");
  await shot("cancelled");

  // --- a completed prebuild, opened by its URL (the page's own route) -------
  log("completed prebuild");
  await page.goto(`${base}/ui/prebuilds/${completedId}`);
  await until("the completed prebuild", async () => (await phase()) === "COMPLETED");
  const snapshot = (await page.getByTestId("snapshot").textContent()) ?? "";
  if (!/\d+(\.\d)? (B|KiB|MiB)/.test(snapshot)) fail(`no snapshot size: "${snapshot}"`);
  await until("the whole archived log", async () => ((await page.getByTestId("log").textContent()) ?? "").includes("[simulated] completed"));
  await shot("completed");

  // --- failure and warning messages ------------------------------------------
  log("failed and warned prebuilds");
  await page.goto(`${base}/ui/prebuilds/${failedId}`);
  await until("the failure message", async () =>
    ((await page.getByTestId("failure-message").textContent()) ?? "").includes("simulated failure"),
  );
  if ((await phase()) !== "FAILED") fail(`the failed prebuild shows ${await phase()}`);
  if (!(await page.getByRole("button", { name: "Cancel" }).isDisabled())) fail("Cancel is enabled on a failed prebuild");
  await shot("failed");
  await page.goto(`${base}/ui/prebuilds/${warnedId}`);
  await until("the warning message", async () =>
    ((await page.getByTestId("warning-message").textContent()) ?? "").includes("simulated warning"),
  );
  if ((await page.getByTestId("failure-message").count()) !== 0) fail("a completed prebuild shows a failure message");

  // --- warm pools ------------------------------------------------------------
  log("warm pools");
  await page.getByRole("link", { name: "Warm pools" }).click();
  const poolRow = page.locator(`tr[data-warm-pool-id="${poolId}"]`);
  const cell = async (id) => ((await poolRow.getByTestId(id).textContent()) ?? "").trim();
  await until("the pool to be READY with 1 running and 0 stopped instances", async () =>
    (await cell("phase")) === "READY" && (await cell("running")) === "1" && (await cell("stopped")) === "0",
  );
  if ((await cell("sizes")) !== "1 / 1") fail(`sizes: ${await cell("sizes")}`);
  if ((await cell("snapshot")) !== `…${completedId.slice(-12)}`) fail(`snapshot: ${await cell("snapshot")}`);
  await shot("pool");

  log("edit sizes: a rejected change");
  await poolRow.getByRole("button", { name: "Edit sizes" }).click();
  await poolRow.getByLabel("min size").fill("3");
  await poolRow.getByLabel("max size").fill("2");
  await poolRow.getByRole("button", { name: "Save" }).click();
  const rejection = page.getByRole("alert");
  await until("the rejection", async () => /invalid_argument/.test((await rejection.textContent()) ?? ""));
  await shot("pool-rejected");
  log("edit sizes: min 2, max 3");
  await poolRow.getByLabel("min size").fill("2");
  await poolRow.getByLabel("max size").fill("3");
  await poolRow.getByRole("button", { name: "Save" }).click();
  await until("the new sizes", async () => (await cell("sizes")) === "2 / 3");
  await until("2 running and 1 stopped instances", async () => (await cell("running")) === "2" && (await cell("stopped")) === "1");
  await shot("pool-resized");

  // --- runners -----------------------------------------------------------------
  log("the runners: the remote runner's member");
  await page.getByRole("link", { name: "Runners" }).click();
  await page.getByRole("heading", { name: "Runners" }).waitFor({ timeout: PATIENCE_MS });
  const memberRow = page.locator(`[data-runner-id="${remoteRunner}"] tr[data-member="${runnerMember}"]`);
  await until("the member, connected", async () => (await memberRow.count()) === 1 && (await memberRow.getByTestId("member-state").textContent()) === "connected");
  if ((await memberRow.getByTestId("member-prebuilds").textContent()) !== "0 / 4") fail("the member's prebuilds and slots are not shown");
  if ((await page.locator("article.runner").count()) !== 3) fail("not every runner of the organization's classes is listed");
  await shot("runners");

  // --- deletions -------------------------------------------------------------
  log("delete the cancelled prebuild");
  await page.goto(`${base}/ui/prebuilds/${runningId}`);
  await until("the cancelled prebuild", async () => (await phase()) === "CANCELLED");
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.getByRole("button", { name: "Delete this prebuild and its snapshot" }).click();
  await page.getByRole("heading", { name: "Prebuilds" }).waitFor({ timeout: PATIENCE_MS });
  await until("the deleted prebuild to leave the list", async () => (await runningRow.count()) === 0 && (await completedRow.count()) === 1 && (await failedRow.count()) === 1);

  log("delete the pool");
  await page.getByRole("link", { name: "Warm pools" }).click();
  await poolRow.getByRole("button", { name: "Delete", exact: true }).click();
  await poolRow.getByRole("button", { name: "Delete this pool" }).click();
  await until("the pool to be deleting or gone", async () => (await poolRow.count()) === 0 || (await cell("phase")) === "DELETING");
  await shot("pool-deleted");

  log("sign out");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("API key").waitFor({ timeout: PATIENCE_MS });
  if ((await page.evaluate(() => sessionStorage.getItem("prebuildd.apiKey"))) !== null) fail("the key survived signing out");

  if (foreign.length > 0) fail(`the page tried to fetch from elsewhere: ${foreign.join(", ")}`);
  if (pageErrors.length > 0) fail(`the page threw: ${pageErrors.join("; ")}`);
  process.stdout.write("PASS\n");
} catch (error) {
  process.stderr.write(`e2e: FAILED: ${error.stack ?? error}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
  stdinLines.return?.();
  process.stdin.destroy();
}

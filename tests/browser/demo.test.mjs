// End-to-end test of the demo page (demo/index.html, served at GET /) in headless Chromium.
//
//   scripts/browser-test            # installs what it needs, builds, runs this file
//   node --test tests/browser/      # when the binary is built and Chromium is installed
//
// Environment:
//   AMS_THUMBNAILS_BIN  the service binary (default target/debug/ams-thumbnails); built by
//                       scripts/browser-test, never by this file
//   CHROMIUM_PATH       the browser (default /usr/bin/chromium, Debian's package; Playwright's
//                       own browser downloads are not used)
//
// Two cases: the embedded local samples, and Azurite with account-key SAS URLs (Azurite from
// tests/azurite/node_modules, seeded by scripts/seed-azurite.py). Each starts its own processes
// on free ports and stops them, also on failure. Screenshots go to test-artifacts/.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.resolve(REPO, process.env.AMS_THUMBNAILS_BIN || "target/debug/ams-thumbnails");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const AZURITE_BIN = path.join(REPO, "tests/azurite/node_modules/.bin/azurite-blob");
const ARTIFACTS = path.join(REPO, "test-artifacts");
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// The page must work under a strict Content-Security-Policy (no inline script or style). The
// service sends one with the page; the test checks that it does and that it stays strict, then
// records every violation. (Not injected by the test: a page fulfilled through Playwright's
// request interception has no address space, and Chromium's Local Network Access checks then
// block its images on loopback hosts such as Azurite.)
function assertStrictCsp(policy) {
  assert.ok(policy, "GET / sends a Content-Security-Policy");
  const directives = Object.fromEntries(
    policy.split(";").map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([name, ...values]) => [name.toLowerCase(), values]),
  );
  for (const name of ["script-src", "style-src"]) {
    const values = directives[name] || directives["default-src"];
    assert.ok(values, `CSP has ${name} (or default-src): ${policy}`);
    for (const loose of ["'unsafe-inline'", "'unsafe-eval'", "*", "data:"]) {
      assert.ok(!values.includes(loose), `CSP ${name} without ${loose}: ${policy}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Processes: every child is tracked and killed at the end, on failure, and on the way out.

fs.mkdirSync(ARTIFACTS, { recursive: true });

const children = new Set();

function track(name, child, logFile) {
  const entry = { name, child, log: [], exited: null };
  const sink = logFile ? fs.createWriteStream(logFile) : null;
  const keep = (chunk) => {
    sink?.write(chunk);
    entry.log.push(chunk.toString());
    if (entry.log.length > 400) entry.log.splice(0, entry.log.length - 400);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  entry.done = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      entry.exited = { code, signal };
      children.delete(entry);
      resolve(entry.exited);
    });
    child.on("error", (error) => {
      entry.exited = { code: null, signal: null, error };
      keep(`spawn error: ${error.message}\n`);
      children.delete(entry);
      resolve(entry.exited);
    });
  });
  entry.done.then(() => sink?.end());
  children.add(entry);
  return entry;
}

function tail(entry, lines = 60) {
  return entry.log.join("").split("\n").slice(-lines).join("\n");
}

async function stop(entry) {
  if (!entry || entry.exited) return;
  entry.child.kill("SIGTERM");
  const timer = setTimeout(() => entry.exited || entry.child.kill("SIGKILL"), 5000);
  await entry.done;
  clearTimeout(timer);
}

// Last resort (an uncaught error, Ctrl-C): no child outlives the test process.
process.on("exit", () => {
  for (const entry of children) {
    try {
      entry.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(signal === "SIGINT" ? 130 : 143));
}

/** A port nobody listens on right now (the kernel's pick, released before returning). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The environment minus the service's own variables and Azurite's account list. */
function cleanEnv(extra) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("AMS_THUMBNAILS_") || key === "AZURITE_ACCOUNTS") continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

async function waitForHttp(url, entry, timeoutMs, { anyStatus = false } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    if (entry.exited) {
      throw new Error(`${entry.name} exited (${JSON.stringify(entry.exited)}) before ${url} answered:\n${tail(entry)}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await response.arrayBuffer();
      if (anyStatus || response.ok) return;
      last = `status ${response.status}`;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms (${last}); ${entry.name}'s log:\n${tail(entry)}`);
}

async function startService(label, { args = [], env = {} } = {}) {
  assert.ok(fs.existsSync(BIN), `no service binary at ${BIN}: build it (cargo build) or set AMS_THUMBNAILS_BIN`);
  const port = await freePort();
  const child = spawn(BIN, args, {
    cwd: REPO,
    env: cleanEnv({ AMS_THUMBNAILS_SERVER__LISTEN: `127.0.0.1:${port}`, ...env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const entry = track(`ams-thumbnails (${label})`, child, path.join(ARTIFACTS, `demo-${label}-service.log`));
  const base = `http://127.0.0.1:${port}`;
  await waitForHttp(`${base}/healthz`, entry, 30_000);
  return { base, entry };
}

async function run(name, command, args, options) {
  const entry = track(name, spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] }));
  const exit = await entry.done;
  if (exit.code !== 0) throw new Error(`${name} failed (${JSON.stringify(exit)}):\n${tail(entry)}`);
  return entry.log.join("");
}

// ---------------------------------------------------------------------------------------------
// The browser: Debian's Chromium through playwright-core, a fresh profile per launch.

async function openBrowser() {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium; scripts/browser-test does)`);
  // launchPersistentContext takes the profile directory itself (Playwright refuses a
  // --user-data-dir in args); a fresh temp one each time.
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "ams-thumbnails-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
      timeout: 60_000,
    });
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** A new page that records console errors, page errors, CSP violations and requests. */
async function newPage(context) {
  const page = await context.newPage();
  const seen = { consoleErrors: [], pageErrors: [], requests: [] };
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    seen.consoleErrors.push(`${message.text()} (${message.location()?.url || "?"})`);
  });
  page.on("pageerror", (error) => seen.pageErrors.push(String(error)));
  page.on("request", (request) => seen.requests.push(request.url()));
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.setDefaultTimeout(20_000);
  return { page, seen };
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const text = await response.text();
  assert.equal(response.status, 200, `GET ${url}: ${response.status} ${text}`);
  return JSON.parse(text);
}

// ---------------------------------------------------------------------------------------------
// The checks, the same for every source.

/**
 * Opens /?asset=ID, waits for the strip, checks that every image loads, hovers the scrub bar
 * at 10 % and 90 %, and takes a screenshot. Returns what it saw, for source-specific checks.
 */
async function checkDemo(context, base, assetId, screenshot) {
  const listing = await getJson(`${base}/assets/${encodeURIComponent(assetId)}/thumbnails`);
  assert.ok(listing.thumbnails.length > 0, `${assetId} has no thumbnails: ${JSON.stringify(listing)}`);

  const { page, seen } = await newPage(context);
  try {
    const pageUrl = `${base}/?asset=${encodeURIComponent(assetId)}`;
    const response = await page.goto(pageUrl, { waitUntil: "load" });
    assert.equal(response.status(), 200, `GET ${pageUrl}`);
    assert.match(response.headers()["content-type"] || "", /^text\/html/, "GET / content type");
    assertStrictCsp(response.headers()["content-security-policy"]);

    // The list loaded: #status and the strip.
    await page.waitForFunction(() => ["ok", "error"].includes(document.querySelector("#status")?.dataset.state));
    const status = await page.locator("#status").textContent();
    assert.equal(status, `loaded ${listing.thumbnails.length} thumbnails`, "#status");
    const thumbs = page.locator("img.thumb");
    assert.equal(await thumbs.count(), listing.thumbnails.length, "one img.thumb per thumbnail");
    assert.deepEqual(
      await thumbs.evaluateAll((imgs) => imgs.map((img) => img.getAttribute("src"))),
      listing.thumbnails.map((t) => t.url),
      "the strip shows every thumbnail url, in list order",
    );
    for (const t of listing.thumbnails.filter((t) => typeof t.time === "number")) {
      const caption = await page.locator(`img.thumb[data-index="${t.index}"]`).first().locator("xpath=ancestor::figure//figcaption").textContent();
      assert.match(caption, /\d+:\d\d/, `thumbnail ${t.index} caption shows its time: ${caption}`);
    }

    // The poster: /assets/{id}/poster, a 302 to an image.
    const poster = page.locator("img#poster");
    assert.equal(await poster.getAttribute("src"), `/assets/${encodeURIComponent(assetId)}/poster`, "poster src");

    // Every image ends up loaded (lazy ones once scrolled into view).
    const images = page.locator("img");
    const count = await images.count();
    for (let i = 0; i < count; i++) {
      // scrollIntoView, not Playwright's scrollIntoViewIfNeeded: a hidden (failed) image
      // must show up as broken below, not as a wait for visibility.
      await images.nth(i)
        .evaluate(
          (el) =>
            new Promise((resolve) => {
              el.scrollIntoView({ block: "center" });
              if (el.complete) return resolve();
              el.addEventListener("load", resolve, { once: true });
              el.addEventListener("error", resolve, { once: true });
            }),
        )
        .catch(() => {});
    }
    const broken = await images.evaluateAll((imgs) =>
      imgs.filter((img) => !(img.complete && img.naturalWidth > 0)).map((img) => img.currentSrc || img.src),
    );
    assert.deepEqual(broken, [], "images that did not load (naturalWidth 0)");
    assert.ok(count >= listing.thumbnails.length + 1, `strip + poster images (${count})`);

    // Scrubbing: storyboard.json on the first hover, a tile per pointer position.
    await page.locator("#scrub").scrollIntoViewIfNeeded();
    const bar = await page.locator("#scrub").boundingBox();
    assert.ok(bar && bar.width > 100, `the scrub bar is laid out: ${JSON.stringify(bar)}`);
    const hover = async (fraction, previous) => {
      await page.mouse.move(bar.x + bar.width * fraction, bar.y + bar.height / 2, { steps: 4 });
      await page.waitForFunction(
        (prev) => {
          const p = document.querySelector("#preview");
          const s = document.querySelector("#scrub-status");
          if (s && (s.dataset.state === "none" || s.dataset.state === "error")) return true;
          return p && p.dataset.tileIndex !== undefined && p.dataset.tileIndex !== prev;
        },
        previous,
      );
      const scrubStatus = await page.locator("#scrub-status").evaluate((el) => ({ state: el.dataset.state, text: el.textContent }));
      assert.equal(scrubStatus.state, "ready", `storyboard.json: ${scrubStatus.text}`);
      return page.locator("#preview").evaluate((el) => ({
        index: Number(el.dataset.tileIndex),
        start: Number(el.dataset.tileStart),
        time: Number(el.dataset.time),
        hidden: el.hidden,
        background: el.querySelector(".preview-image").style.backgroundImage,
        position: el.querySelector(".preview-image").style.backgroundPosition,
        width: el.querySelector(".preview-image").style.width,
        height: el.querySelector(".preview-image").style.height,
      }));
    };
    const early = await hover(0.1, undefined);
    const late = await hover(0.9, String(early.index));

    const board = await getJson(`${base}/assets/${encodeURIComponent(assetId)}/storyboard.json`);
    assert.equal(board.assetId, assetId, "storyboard.json assetId");
    assert.ok(Array.isArray(board.tiles) && board.tiles.length > 1, "storyboard.json tiles");
    const duration = Math.max(...board.tiles.map((t) => t.end));
    for (const [name, seenTile, fraction] of [["10 %", early, 0.1], ["90 %", late, 0.9]]) {
      const tile = board.tiles[seenTile.index];
      assert.ok(tile, `${name}: data-tile-index ${seenTile.index} is a tile`);
      assert.equal(seenTile.start, tile.start, `${name}: data-tile-start is the tile's start`);
      assert.ok(tile.start <= seenTile.time && seenTile.time < tile.end, `${name}: tile ${seenTile.index} covers ${seenTile.time}`);
      assert.ok(Math.abs(seenTile.time - fraction * duration) <= duration * 0.02, `${name}: time ${seenTile.time} of ${duration}`);
      assert.equal(seenTile.hidden, false, `${name}: preview shown`);
      assert.ok(seenTile.background.includes(new URL(board.url).pathname), `${name}: sprite as background (${seenTile.background})`);
      assert.equal(seenTile.position, `${-tile.x}px ${-tile.y}px`, `${name}: background position`);
      assert.deepEqual([seenTile.width, seenTile.height], [`${tile.w}px`, `${tile.h}px`], `${name}: preview size`);
    }
    assert.notEqual(late.index, early.index, "another tile at 90 % than at 10 %");
    assert.ok(late.start > early.start, `start times increase (${early.start} -> ${late.start})`);
    assert.equal(seen.requests.filter((u) => new URL(u).pathname.endsWith("/storyboard.json")).length, 1, "storyboard.json fetched once");

    // The sprite URL itself loads in the browser (signed URLs included).
    const sprite = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const img = new Image();
          img.onload = () => resolve({ w: img.naturalWidth, h: img.naturalHeight });
          img.onerror = () => resolve({ w: 0, h: 0 });
          img.src = url;
        }),
      board.url,
    );
    assert.ok(sprite.w > 0 && sprite.h > 0, `sprite ${board.url} loads`);

    await page.screenshot({ path: path.join(ARTIFACTS, screenshot), fullPage: true });

    const csp = await page.evaluate(() => window.__cspViolations);
    assert.deepEqual(csp, [], "CSP violations");
    assert.deepEqual(seen.pageErrors, [], "page errors");
    assert.deepEqual(seen.consoleErrors, [], "console errors");
    return { listing, board, early, late };
  } finally {
    await page.close().catch(() => {});
  }
}

/** Opens /?asset=ID for an asset that has no thumbnails or does not exist. */
async function checkProblemPage(context, base, assetId) {
  const { page, seen } = await newPage(context);
  try {
    await page.goto(`${base}/?asset=${encodeURIComponent(assetId)}`, { waitUntil: "load" });
    await page.waitForFunction(() => ["ok", "error"].includes(document.querySelector("#status")?.dataset.state));
    const status = await page.locator("#status").evaluate((el) => ({ state: el.dataset.state, text: el.textContent }));
    // Hovering asks for storyboard.json, which answers 404: said, not thrown.
    const bar = await page.locator("#scrub").boundingBox();
    await page.mouse.move(bar.x + bar.width / 2, bar.y + bar.height / 2, { steps: 2 });
    await page.waitForTimeout(300);
    const scrub = await page.locator("#scrub-status").evaluate((el) => ({ state: el.dataset.state, text: el.textContent }));
    const preview = await page.locator("#preview").evaluate((el) => ({ hidden: el.hidden, index: el.dataset.tileIndex }));
    const csp = await page.evaluate(() => window.__cspViolations);
    assert.deepEqual(csp, [], "CSP violations");
    assert.deepEqual(seen.pageErrors, [], "page errors");
    return { status, scrub, preview, poster: await page.locator("img#poster").evaluate((el) => ({ hidden: el.hidden, src: el.getAttribute("src") })) };
  } finally {
    await page.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------

describe("demo page, embedded local samples", { timeout: 180_000 }, () => {
  let service;
  let browser;
  before(async () => {
    service = await startService("local");
    browser = await openBrowser();
  });
  after(async () => {
    await browser?.close();
    await stop(service?.entry);
  });

  it("shows sprite-storyboard: strip, poster, scrubbing preview", async () => {
    const { listing } = await checkDemo(browser.context, service.base, "sprite-storyboard", "demo-local.png");
    assert.ok(listing.thumbnails.every((t) => t.url.startsWith(`${service.base}/local/`)), "local URLs");
  });

  it("serves the page and its assets with the right types", async () => {
    for (const [p, type] of [["/", /^text\/html/], ["/demo/app.js", /^(text|application)\/javascript/], ["/demo/app.css", /^text\/css/]]) {
      const response = await fetch(`${service.base}${p}`);
      await response.arrayBuffer();
      assert.equal(response.status, 200, `GET ${p}`);
      assert.match(response.headers.get("content-type") || "", type, `GET ${p} content type`);
    }
  });

  it("says so when an asset has no thumbnails", async () => {
    const seen = await checkProblemPage(browser.context, service.base, "no-thumbnails");
    assert.deepEqual(seen.status, { state: "ok", text: "loaded 0 thumbnails" });
    assert.equal(seen.poster.hidden, true, "no poster shown");
    assert.equal(seen.poster.src, null, "no poster requested");
    assert.equal(seen.scrub.state, "none", `scrub status: ${seen.scrub.text}`);
    assert.equal(seen.preview.hidden, true, "no preview");
  });

  it("says so when an asset has thumbnails but no storyboard sprite", async () => {
    const seen = await checkProblemPage(browser.context, service.base, "builtin-preset");
    assert.equal(seen.status.state, "ok");
    assert.match(seen.status.text, /^loaded [1-9]\d* thumbnails$/);
    assert.equal(seen.poster.src, "/assets/builtin-preset/poster");
    assert.equal(seen.scrub.state, "none", `scrub status: ${seen.scrub.text}`);
    assert.match(seen.scrub.text, /no scrubbing preview: .*\(404/, "the storyboard.json problem, said");
    assert.equal(seen.preview.hidden, true, "no preview");
    assert.equal(seen.preview.index, undefined, "no tile");
  });

  it("shows the problem's detail for an unknown asset", async () => {
    const seen = await checkProblemPage(browser.context, service.base, "does-not-exist");
    assert.equal(seen.status.state, "error");
    assert.match(seen.status.text, /no asset has this id/, "the problem's detail");
    assert.match(seen.status.text, /404/);
    assert.equal(seen.preview.hidden, true, "no preview");
  });
});

describe("demo page, Azurite with account-key SAS URLs", { timeout: 240_000 }, () => {
  let azurite;
  let service;
  let browser;
  let workdir;
  let guid;
  let azuriteOrigin;
  before(async () => {
    assert.ok(fs.existsSync(AZURITE_BIN), `no Azurite at ${AZURITE_BIN}: npm ci --prefix tests/azurite (scripts/browser-test does)`);
    workdir = fs.mkdtempSync(path.join(os.tmpdir(), "ams-thumbnails-browser-azurite-"));
    const port = await freePort();
    azuriteOrigin = `http://127.0.0.1:${port}`;
    const endpoint = `${azuriteOrigin}/devstoreaccount1`;
    // As scripts/azurite-demo: in memory, in a temp working dir, only the well-known account.
    azurite = track(
      "azurite-blob",
      spawn(
        AZURITE_BIN,
        ["--blobHost", "127.0.0.1", "--blobPort", String(port), "--inMemoryPersistence", "--loose", "--skipApiVersionCheck", "--disableTelemetry"],
        { cwd: workdir, env: cleanEnv({}), stdio: ["ignore", "pipe", "pipe"] },
      ),
      path.join(ARTIFACTS, "demo-azurite-azurite.log"),
    );
    await waitForHttp(`http://127.0.0.1:${port}/`, azurite, 30_000, { anyStatus: true });
    const catalog = path.join(workdir, "catalog.csv");
    await run("seed-azurite.py", "python3", ["scripts/seed-azurite.py", "--endpoint", endpoint, "--catalog", catalog, "--wait", "30"], { cwd: REPO, env: cleanEnv({}) });
    const row = fs
      .readFileSync(catalog, "utf8")
      .trim()
      .split("\n")
      .map((line) => line.split(","))
      .find((cells) => cells[0] === "sprite-storyboard");
    assert.ok(row, "sprite-storyboard in the seeded catalog");
    guid = row[2];
    service = await startService("azurite", {
      args: ["--config", "config/azurite.toml"],
      env: { AMS_THUMBNAILS_STORAGE__ENDPOINT: `http://127.0.0.1:${port}/{account}` },
    });
    browser = await openBrowser();
  });
  after(async () => {
    await browser?.close();
    await stop(service?.entry);
    await stop(azurite);
    if (workdir) fs.rmSync(workdir, { recursive: true, force: true });
  });

  it("shows sprite-storyboard by GUID: signed strip, poster, scrubbing preview", async () => {
    const { listing, board } = await checkDemo(browser.context, service.base, guid, "demo-azurite.png");
    for (const url of [...listing.thumbnails.map((t) => t.url), board.url]) {
      const u = new URL(url);
      assert.equal(u.origin, azuriteOrigin, `served by Azurite: ${url}`);
      assert.ok(u.searchParams.get("sig") && u.searchParams.get("se"), `a signed URL: ${url}`);
    }
    assert.ok(listing.expiresAt, "expiresAt with signed URLs");
    assert.ok(board.expiresAt, "storyboard.json expiresAt with a signed sprite URL");
  });
});

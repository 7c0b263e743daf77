// ams-thumbnails demo page: the thumbnail strip, the poster and a scrubbing preview of one asset.
//
// Plain ES module, no build step, no dependencies. No inline script or style: styles set from
// here go through the CSSOM (element.style.*), which a `style-src 'self'` policy allows.
//
// Test hooks (tests/browser/demo.test.mjs):
//   #status          "loaded N thumbnails", or the problem's detail; data-state = loading|ok|error
//   img.thumb        one per thumbnail, in list order
//   img#poster       /assets/{id}/poster
//   #scrub           the scrubbing bar
//   #preview         data-tile-index (0-based index into storyboard.json's tiles) and
//                    data-tile-start (that tile's start, seconds), updated on hover
//   #scrub-status    data-state = idle|loading|ready|none|error

const $ = (id) => document.getElementById(id);

const els = {
  form: $("pick"),
  input: $("asset"),
  status: $("status"),
  poster: $("poster"),
  posterCaption: $("poster-caption"),
  strip: $("strip"),
  expiry: $("expiry"),
  scrub: $("scrub"),
  scrubFill: $("scrub-fill"),
  cursor: $("scrub-cursor"),
  preview: $("preview"),
  previewImage: $("preview-image"),
  previewTime: $("preview-time"),
  scrubStatus: $("scrub-status"),
};

// The asset on show. `generation` changes on every switch, so that late answers about the
// previous asset are dropped.
const current = {
  assetId: "",
  generation: 0,
  storyboard: null, // Promise<{ok, board?, message?}> once the first hover asked for it
  board: null, // the storyboard.json document, once loaded
  tileIndex: -1,
  time: null, // the time last shown in the preview
};

const assetPath = (assetId) => `/assets/${encodeURIComponent(assetId)}`;

// ---------------------------------------------------------------------------------------------
// Fetching, with problem+json errors turned into one readable line.

/** GETs a JSON document; resolves to {ok, status, body?, message?}, never rejects. */
async function getJson(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (e) {
    return { ok: false, status: 0, message: `network error: ${e.message || e}` };
  }
  const type = response.headers.get("content-type") || "";
  let body = null;
  if (/json/i.test(type)) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (response.ok && body) {
    return { ok: true, status: response.status, body };
  }
  return { ok: false, status: response.status, problem: body, message: problemMessage(response, body) };
}

/** One line for a failed answer: the problem's detail (and title/code), else the HTTP status. */
function problemMessage(response, body) {
  if (body && typeof body === "object" && (body.detail || body.title)) {
    const head = body.title ? `${body.title}: ` : "";
    const code = body.code ? ` ${body.code}` : "";
    return `${head}${body.detail || ""} (${response.status}${code})`;
  }
  if (response.ok) {
    return `unexpected answer (${response.status}, ${response.headers.get("content-type") || "no content type"})`;
  }
  return `HTTP ${response.status} ${response.statusText || ""}`.trim();
}

// ---------------------------------------------------------------------------------------------
// Formatting.

/** Seconds as m:ss or h:mm:ss, with tenths when not whole. */
function formatTime(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const negative = seconds < 0;
  let rest = Math.abs(seconds);
  const h = Math.floor(rest / 3600);
  rest -= h * 3600;
  const m = Math.floor(rest / 60);
  rest -= m * 60;
  const whole = Math.abs(rest - Math.round(rest)) < 0.05;
  const s = whole ? String(Math.round(rest)).padStart(2, "0") : rest.toFixed(1).padStart(4, "0");
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return `${negative ? "-" : ""}${h ? `${h}:` : ""}${mm}:${s}`;
}

function formatBytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A URL as a CSS url() value (quotes, backslashes and line breaks escaped). */
function cssUrl(url) {
  return `url("${String(url).replace(/["\\\n\r\f]/g, (c) => `\\${c.charCodeAt(0).toString(16)} `)}")`;
}

function setStatus(el, state, text) {
  el.dataset.state = state;
  el.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Loading an asset: the list, the strip, the poster.

async function show(assetId) {
  assetId = assetId.trim();
  const generation = ++current.generation;
  current.assetId = assetId;
  current.storyboard = null;
  current.board = null;
  current.tileIndex = -1;
  current.time = null;
  resetScrub();
  els.strip.replaceChildren();
  els.expiry.textContent = "";
  els.poster.hidden = true;
  els.poster.removeAttribute("src");
  els.posterCaption.textContent = "";

  if (!assetId) {
    setStatus(els.status, "idle", "Pick an asset.");
    document.title = "ams-thumbnails demo";
    return;
  }
  document.title = `${assetId} · ams-thumbnails demo`;
  setStatus(els.status, "loading", `loading ${assetId}…`);

  const answer = await getJson(`${assetPath(assetId)}/thumbnails`);
  if (generation !== current.generation) return;
  if (!answer.ok) {
    setStatus(els.status, "error", answer.message);
    els.posterCaption.textContent = "no poster";
    setStatus(els.scrubStatus, "none", "");
    els.scrub.classList.add("disabled");
    return;
  }

  const thumbnails = Array.isArray(answer.body.thumbnails) ? answer.body.thumbnails : [];
  renderStrip(thumbnails);
  if (answer.body.expiresAt) {
    els.expiry.textContent = `URLs valid until ${new Date(answer.body.expiresAt).toLocaleString()}`;
  }
  setStatus(els.status, "ok", `loaded ${thumbnails.length} thumbnails`);
  els.status.dataset.count = String(thumbnails.length);

  if (thumbnails.length > 0) {
    setPoster(`${assetPath(assetId)}/poster`, "default poster");
  } else {
    els.posterCaption.textContent = "no poster: the asset has no thumbnails";
  }
  if (!answer.body.storyboard) {
    // The list says there is no sprite; storyboard.json would answer 404. Still let a hover ask
    // (the answer is the authority), but say so up front.
    els.scrubStatus.textContent = "no storyboard sprite for this asset";
  }
}

function renderStrip(thumbnails) {
  const items = thumbnails.map((t) => {
    const li = document.createElement("li");
    li.className = "strip-item";
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.className = "thumb";
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = t.name || `thumbnail ${t.index}`;
    if (Number.isInteger(t.width) && Number.isInteger(t.height)) {
      // Intrinsic size up front: no layout shift while lazy images arrive.
      img.width = t.width;
      img.height = t.height;
    }
    img.dataset.index = String(t.index);
    if (t.label) img.dataset.label = t.label;
    if (typeof t.time === "number") img.dataset.time = String(t.time);
    img.addEventListener("error", () => {
      li.classList.add("broken");
      caption.textContent += " · failed to load";
    });
    img.src = t.url;

    const caption = document.createElement("figcaption");
    caption.className = "caption";
    const parts = [`#${t.index}`];
    if (t.label) parts.push(t.label);
    if (typeof t.time === "number") parts.push(formatTime(t.time));
    if (Number.isInteger(t.width) && Number.isInteger(t.height)) parts.push(`${t.width}×${t.height}`);
    caption.textContent = parts.join(" · ");
    caption.title = [t.name, t.contentType, formatBytes(t.size)].filter(Boolean).join(" · ");

    const link = document.createElement("a");
    link.href = t.url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.append(img);
    figure.append(link, caption);
    li.append(figure);
    return li;
  });
  els.strip.replaceChildren(...items);
}

function setPoster(url, caption) {
  const generation = current.generation;
  els.poster.onload = () => {
    if (generation !== current.generation) return;
    els.poster.hidden = false;
    els.posterCaption.textContent = caption;
  };
  els.poster.onerror = () => {
    if (generation !== current.generation) return;
    els.poster.hidden = true;
    els.posterCaption.textContent = `poster failed to load (${caption})`;
  };
  els.poster.alt = `poster of ${current.assetId}`;
  els.poster.src = url;
  // Shown right away (its box keeps the layout stable); hidden again if it fails.
  els.poster.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// The scrubbing bar: storyboard.json, fetched once per asset on the first hover.

function resetScrub() {
  els.scrub.classList.remove("disabled");
  els.preview.hidden = true;
  els.cursor.hidden = true;
  delete els.preview.dataset.tileIndex;
  delete els.preview.dataset.tileStart;
  els.previewImage.style.backgroundImage = "";
  els.scrubFill.style.width = "0";
  els.scrub.setAttribute("aria-valuemax", "0");
  els.scrub.setAttribute("aria-valuenow", "0");
  els.scrub.setAttribute("aria-valuetext", "");
  setStatus(els.scrubStatus, "idle", "");
}

/** The storyboard of the current asset: one fetch, shared by every hover. */
function storyboard() {
  if (!current.assetId) return Promise.resolve({ ok: false, message: "no asset" });
  if (current.storyboard) return current.storyboard;
  const generation = current.generation;
  setStatus(els.scrubStatus, "loading", "loading storyboard…");
  current.storyboard = getJson(`${assetPath(current.assetId)}/storyboard.json`).then((answer) => {
    if (generation !== current.generation) return { ok: false, stale: true };
    const board = answer.ok ? validBoard(answer.body) : null;
    if (!board) {
      const message = answer.ok ? "storyboard.json has no usable tiles" : answer.message;
      setStatus(els.scrubStatus, answer.status === 404 ? "none" : "error", `no scrubbing preview: ${message}`);
      els.scrub.classList.add("disabled");
      return { ok: false, message };
    }
    current.board = board;
    const end = board.duration;
    els.scrub.setAttribute("aria-valuemax", String(end));
    const expires = board.expiresAt ? `, sprite URL valid until ${new Date(board.expiresAt).toLocaleString()}` : "";
    setStatus(els.scrubStatus, "ready", `${board.tiles.length} tiles over ${formatTime(end)}${expires}`);
    // Warm the sprite so the first preview does not flash empty.
    const warm = new Image();
    warm.src = board.url;
    return { ok: true, board };
  });
  return current.storyboard;
}

/** The tiles sorted by start, and the duration (the last tile's end); null when unusable. */
function validBoard(body) {
  if (!body || typeof body.url !== "string" || !Array.isArray(body.tiles)) return null;
  const tiles = body.tiles
    .map((t, i) => ({ ...t, i }))
    .filter((t) => [t.start, t.end, t.x, t.y, t.w, t.h].every((v) => typeof v === "number" && Number.isFinite(v)))
    .filter((t) => t.end > t.start && t.w > 0 && t.h > 0)
    .sort((a, b) => a.start - b.start || a.i - b.i);
  if (tiles.length === 0) return null;
  const duration = Math.max(...tiles.map((t) => t.end));
  return { ...body, tiles, duration };
}

/** The tile covering time t; in a gap between cues, the last one that started before t. */
function tileAt(board, t) {
  let found = board.tiles[0];
  for (const tile of board.tiles) {
    if (tile.start <= t && t < tile.end) return tile;
    if (tile.start <= t) found = tile;
  }
  return found;
}

/** The time under a pointer at clientX: [0, duration). */
function timeAt(board, clientX) {
  const rect = els.scrub.getBoundingClientRect();
  if (rect.width <= 0) return 0;
  const fraction = Math.min(Math.max((clientX - rect.left) / rect.width, 0), 1);
  // Strictly before the end, so the far right edge still shows the last tile.
  return Math.min(fraction * board.duration, board.duration - 1e-6);
}

function showTile(board, t) {
  const tile = tileAt(board, t);
  const rect = els.scrub.getBoundingClientRect();
  const fraction = board.duration > 0 ? t / board.duration : 0;
  const x = fraction * rect.width;

  els.previewImage.style.backgroundImage = cssUrl(board.url);
  els.previewImage.style.backgroundPosition = `${-tile.x}px ${-tile.y}px`;
  els.previewImage.style.width = `${tile.w}px`;
  els.previewImage.style.height = `${tile.h}px`;
  // Centered over the pointer, kept inside the bar.
  const left = Math.min(Math.max(x - tile.w / 2, 0), Math.max(rect.width - tile.w, 0));
  els.preview.style.left = `${left}px`;
  els.previewTime.textContent = `${formatTime(t)}  (tile ${tile.i + 1}: ${formatTime(tile.start)}–${formatTime(tile.end)})`;
  els.preview.dataset.tileIndex = String(tile.i);
  els.preview.dataset.tileStart = String(tile.start);
  els.preview.dataset.time = t.toFixed(3);
  els.preview.hidden = false;

  els.cursor.style.left = `${x}px`;
  els.cursor.hidden = false;
  els.scrubFill.style.width = `${x}px`;
  els.scrub.setAttribute("aria-valuenow", t.toFixed(1));
  els.scrub.setAttribute("aria-valuetext", formatTime(t));
  current.tileIndex = tile.i;
  current.time = t;
}

async function onPointer(event) {
  const generation = current.generation;
  const clientX = event.clientX;
  const answer = await storyboard();
  if (!answer.ok || generation !== current.generation) return;
  showTile(answer.board, timeAt(answer.board, clientX));
}

function hidePreview() {
  els.preview.hidden = true;
  els.cursor.hidden = true;
}

function onKey(event) {
  const step = { ArrowRight: 1, ArrowLeft: -1, Home: -Infinity, End: Infinity }[event.key];
  if (step === undefined) return;
  event.preventDefault();
  storyboard().then((answer) => {
    if (!answer.ok) return;
    const tiles = answer.board.tiles;
    const position = tiles.findIndex((t) => t.i === current.tileIndex);
    // From no tile yet, ArrowRight starts at the first one. ±Infinity (Home/End) clamps.
    const next = Math.min(Math.max((position < 0 ? -1 : position) + step, 0), tiles.length - 1);
    showTile(answer.board, tiles[next].start);
  });
}

/** A click makes the hovered moment the poster (`/poster?time=`, the nearest thumbnail). */
function onClick(event) {
  onPointer(event).then(() => {
    if (!current.board || typeof current.time !== "number") return;
    const t = current.time.toFixed(3);
    setPoster(`${assetPath(current.assetId)}/poster?time=${t}`, `poster nearest ${formatTime(current.time)}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring: the form, ?asset= in the page URL, history.

function assetFromUrl() {
  return new URLSearchParams(window.location.search).get("asset") || "";
}

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const assetId = els.input.value.trim();
  const url = new URL(window.location.href);
  if (assetId) url.searchParams.set("asset", assetId);
  else url.searchParams.delete("asset");
  if (url.href !== window.location.href) history.pushState({ assetId }, "", url);
  show(assetId);
});

window.addEventListener("popstate", () => {
  const assetId = assetFromUrl();
  els.input.value = assetId;
  show(assetId);
});

els.scrub.addEventListener("pointerenter", onPointer);
els.scrub.addEventListener("pointermove", onPointer);
els.scrub.addEventListener("pointerleave", hidePreview);
els.scrub.addEventListener("click", onClick);
els.scrub.addEventListener("focus", () => storyboard());
els.scrub.addEventListener("keydown", onKey);

const initial = assetFromUrl();
els.input.value = initial;
show(initial);

// The parley web widget in a real browser (Debian's Chromium driven by playwright-core).
//
// Run by tests/e2e/widget_browser.rs, which starts parley, a fake LLM that streams its
// answers in pieces 150 ms apart, host pages on other origins and a proxy it can cut, and
// passes their addresses here:
//   PARLEY_URL, PARLEY_ADMIN_KEY, WIDGET_ID, AGENT_ID, HOST_URL (allowed origin: /floating,
//   /embedded, /ar, /csp, /proxied and /control/{cut,restore}), OTHER_URL (an origin that
//   is not allowed), PROXY_URL, SHOTS_DIR, CHROMIUM.
// Exits 0 when every scenario passed. Screenshots of each state go to SHOTS_DIR.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (this script is run by tests/e2e/widget_browser.rs)`);
  return v;
}
const PARLEY = env('PARLEY_URL');
const ADMIN_KEY = env('PARLEY_ADMIN_KEY');
const WIDGET_ID = env('WIDGET_ID');
const AGENT_ID = env('AGENT_ID');
const HOST = env('HOST_URL');
const OTHER = env('OTHER_URL');
const SHOTS = env('SHOTS_DIR');
const GREETING = "Hello, I'm Alex";
const SIZE_BUDGET = 30 * 1024;

// ---------------------------------------------------------------------------------------
// Small test harness: scenarios run one after another; a failed check ends its scenario.

const results = [];
let lastPage = null; // the page a failed scenario was on
const started = Date.now();

function check(ok, what, detail) {
  if (!ok) throw new Error(`${what}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
  console.log(`    ✓ ${what}`);
}

function equal(actual, expected, what) {
  check(JSON.stringify(actual) === JSON.stringify(expected), what, { actual, expected });
}

// ONLY=word runs just the scenarios whose name contains it (while working on one).
const ONLY = process.env.ONLY;

async function scenario(name, fn) {
  if (ONLY && !name.includes(ONLY)) return;
  const t0 = Date.now();
  console.log(`• ${name}`);
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - t0 });
  } catch (e) {
    console.log(`    ✗ ${e.stack || e}`);
    // What the last page looked like and said, to see why.
    if (lastPage && !lastPage.isClosed()) {
      console.log(`    console of the page: ${JSON.stringify([...lastPage.errors, ...lastPage.warnings])}`);
      await shot(lastPage, `FAILED-${name.replace(/\W+/g, '-')}`).catch(() => {});
    }
    results.push({ name, ok: false, ms: Date.now() - t0, error: String(e.message || e) });
  }
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, animations: 'disabled' });
  console.log(`    📷 ${path.relative(process.cwd(), file)}`);
}

// ---------------------------------------------------------------------------------------
// The widget as the test sees it (its Shadow DOM is open; the page's is not touched)

/** Runs in the page: the widget's visible state. */
function snapshot() {
  const root = document.querySelector('parley-chat')?.shadowRoot;
  if (!root || !root.querySelector('.panel')) return null;
  const q = (s) => root.querySelector(s);
  const badge = q('.badge');
  return {
    open: !q('.panel').hidden,
    rows: [...root.querySelectorAll('.row:not(.typing)')].map((r) => ({
      kind: ['me', 'ai', 'op'].find((k) => r.classList.contains(k)),
      id: r.dataset.id ?? null,
      text: r.querySelector('.bubble').textContent,
      label: r.querySelector('.who')?.textContent ?? null,
      streaming: r.classList.contains('streaming'),
      sending: r.classList.contains('sending'),
      failed: r.classList.contains('failed'),
      dir: r.querySelector('.bubble').getAttribute('dir'),
      time: r.querySelector('time')?.getAttribute('datetime') ?? null,
    })),
    notice: q('.notice')?.textContent ?? null,
    status: q('.status').textContent,
    badge: badge && !badge.hidden ? badge.textContent : null,
    typing: !q('.typing').hidden,
    composer: !q('.composer').hidden,
  };
}

const state = (page) => page.evaluate(snapshot);

/** Polls the widget's state until `pred` holds; fails with the last state seen. */
async function until(page, pred, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let s = null;
  for (;;) {
    s = await state(page).catch(() => null);
    if (s && pred(s)) return s;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; widget state: ${JSON.stringify(s)}; console: ${JSON.stringify([...page.errors, ...page.warnings])}`);
    }
    await new Promise((r) => setTimeout(r, 40));
  }
}

/** Polls a Node-side condition (e.g. one set by a response listener). */
async function eventually(cond, what, timeout = 5000) {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const widget = (page) => page.locator('parley-chat');
const part = (page, sel) => widget(page).locator(sel); // CSS locators pierce open shadow roots

/** The element focused inside the widget, as "tag.class". */
const focused = (page) =>
  page.evaluate(() => {
    const a = document.activeElement;
    if (!a || a.tagName !== 'PARLEY-CHAT') return `page:${a && a.tagName}`;
    const f = a.shadowRoot.activeElement;
    return f ? `${f.tagName.toLowerCase()}${f.className ? `.${f.className.split(' ')[0]}` : ''}` : 'none';
  });

/** Remembers the conversation each page's widget talks in (from its own API responses). */
function trackSession(page) {
  page.on('response', async (r) => {
    if (r.request().method() !== 'POST' || !/\/widget\/v1\/[^/]+\/(visitors|conversations)$/.test(r.url())) return;
    const body = await r.json().catch(() => null);
    const sid = body && (body.conversation ? body.conversation.session_id : body.session_id);
    if (sid) page.sessionId = sid;
  });
}

async function type(page, text) {
  await part(page, 'textarea').fill(text);
  await part(page, 'textarea').press('Enter');
}

/** Sends `text` and waits for the agent's committed answer to it. */
async function ask(page, text) {
  const before = (await state(page)).rows.length;
  await type(page, text);
  return until(
    page,
    (s) => s.rows.length >= before + 2 && s.rows.at(-1).kind === 'ai' && s.rows.at(-1).id && s.rows.at(-2).id,
    `the answer to "${text}"`
  );
}

async function admin(method, p, body) {
  const r = await fetch(PARLEY + p, {
    method,
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function setMode(sid, mode) {
  await admin('POST', `/api/v1/conversations/${sid}/mode`, { mode });
}

async function operatorSays(sid, text) {
  await admin('POST', `/api/v1/conversations/${sid}/messages`, { text });
}

async function control(what) {
  const r = await fetch(`${HOST}/control/${what}`, { method: 'POST' });
  if (!r.ok) throw new Error(`control ${what}: ${r.status}`);
}

/** A small PNG (a gradient), encoded here so the test needs no image files. */
function png(w, h) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = 37 + ((x * 180) / w) | 0;
      raw[o + 1] = 99 + ((y * 120) / h) | 0;
      raw[o + 2] = 235;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** The widget's config as a page of `origin` gets it: [status, body]. */
function configAs(origin) {
  return new Promise((resolve, reject) => {
    http
      .get(`${PARLEY}/widget/v1/${WIDGET_ID}/config`, { headers: { origin } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve([res.statusCode, JSON.parse(Buffer.concat(chunks).toString() || 'null')]));
      })
      .on('error', reject);
  });
}

/** Replaces the widget's settings and waits until pages see them (parley caches a
 * widget for a moment). */
async function putSettings(settings, seen) {
  await admin('PUT', `/api/v1/agents/${AGENT_ID}/widget`, settings);
  const deadline = Date.now() + 10000;
  for (;;) {
    const [status, body] = await configAs(settings.allowed_origins.at(-1));
    if (status === 200 && seen(body)) return;
    if (Date.now() > deadline) throw new Error(`the new widget settings never showed: ${status} ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The bytes a browser downloads for `url` when it accepts gzip. */
function gzipSize(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers: { 'accept-encoding': 'gzip', origin: HOST } }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if (res.statusCode !== 200) return reject(new Error(`${url}: ${res.statusCode}`));
          const served = res.headers['content-encoding'] === 'gzip';
          const plain = served ? zlib.gunzipSync(body) : body;
          resolve({
            served,
            plain: plain.length,
            // Served compressed: what went over the wire; else what gzip -9 would make.
            gzip: served ? body.length : zlib.gzipSync(plain, { level: 9 }).length,
            headers: res.headers,
          });
        });
      })
      .on('error', reject);
  });
}

// ---------------------------------------------------------------------------------------

fs.mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const desktop = { viewport: { width: 1280, height: 800 }, locale: 'en-US' };

async function newPage(options = desktop) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.errors = [];
  page.warnings = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon\.ico$/.test(m.location().url)) page.errors.push(m.text());
    if (m.type() === 'warning') page.warnings.push(m.text());
  });
  trackSession(page);
  lastPage = page;
  return page;
}

// The floating widget end to end: opening by mouse and keyboard, streaming, markdown,
// reload, attachments, the operator, unread badge, accessibility, closing, the page API.
await scenario('floating widget', async () => {
  const page = await newPage();
  await page.goto(`${HOST}/floating`);
  const launcher = part(page, '.launcher');
  await launcher.waitFor({ state: 'visible' });

  // The page's hostile CSS does not reach in.
  const look = await launcher.evaluate((b) => {
    const cs = getComputedStyle(b);
    return { bg: cs.backgroundColor, w: b.getBoundingClientRect().width, font: getComputedStyle(b.getRootNode().querySelector('.pw')).fontFamily };
  });
  equal(look.bg, 'rgb(37, 99, 235)', "the launcher keeps the widget's colour on a page styling every button");
  equal(look.w, 60, 'and its size');
  check(!/comic/i.test(look.font), 'the page font does not leak in', look.font);
  check((await part(page, '.panel').count()) === 1 && !(await state(page)).open, 'the panel starts closed');
  equal(await part(page, 'button[aria-label="Record a voice message"]').count(), 0, 'no mic without a speech-to-text backend');

  // Keyboard: Enter opens and focuses the composer; Escape closes and returns to the launcher.
  await launcher.focus();
  await page.keyboard.press('Enter');
  await until(page, (s) => s.open && s.rows.length >= 1, 'the panel to open with the greeting');
  equal(await focused(page), 'textarea', 'focus moves into the panel (the composer)');
  equal(await launcher.getAttribute('aria-expanded'), 'true', 'the launcher says it is expanded');
  let s = await until(page, (x) => x.rows[0] && x.rows[0].text.startsWith(GREETING), 'the greeting');
  equal(s.rows.map((r) => r.kind), ['ai'], 'the greeting is the first message');
  const font = await part(page, 'textarea').evaluate((e) => getComputedStyle(e).fontSize);
  equal(font, '15px', 'the composer keeps its own font size');
  await shot(page, '01-floating-open');
  await page.keyboard.press('Escape');
  s = await state(page);
  check(!s.open, 'Escape closes the panel');
  equal(await focused(page), 'button.launcher', 'focus returns to the launcher');
  await page.keyboard.press('Enter');
  await until(page, (x) => x.open, 'Enter to reopen');
  await part(page, 'button[aria-label="Close chat"]').click();
  await until(page, (x) => !x.open, 'the close button to close');
  await launcher.click();
  await until(page, (x) => x.open, 'a click to open');

  // An answer streams in: the bubble grows in several steps before it is committed.
  await page.evaluate(() => {
    const root = document.querySelector('parley-chat').shadowRoot;
    window.__growth = [];
    window.__typing = false;
    new MutationObserver(() => {
      const b = root.querySelector('.row.streaming .bubble');
      if (b && window.__growth.at(-1) !== b.textContent) window.__growth.push(b.textContent);
      if (!root.querySelector('.typing').hidden) window.__typing = true;
    }).observe(root, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  s = await ask(page, 'Can you show me some markdown?');
  const growth = await page.evaluate(() => window.__growth);
  const final = s.rows.at(-1).text;
  const partial = growth.filter((g) => g.length > 0 && g.length < final.length);
  check(partial.length >= 2, `the answer appeared in ${partial.length} growing steps before it was complete`, growth);
  check(partial.at(-1).length > partial[0].length, 'and it grew');
  check(await page.evaluate(() => window.__typing), 'a typing indicator showed while waiting');
  equal(s.rows.map((r) => r.kind), ['ai', 'me', 'ai'], 'greeting, question, answer: each once');
  check(s.rows.every((r) => r.dir === 'auto' && r.time), 'every message has dir="auto" and a timestamp');
  check(!s.typing && !s.rows.some((r) => r.streaming || r.sending), 'nothing left pending');

  // Markdown became DOM nodes; HTML and javascript: links stayed text.
  const answer = part(page, '.row.ai:not(.typing)').last().locator('.bubble');
  equal(await answer.locator('strong').textContent(), 'bold', 'bold');
  equal(await answer.locator('em').textContent(), 'italic', 'italic');
  equal(await answer.locator('p code').textContent(), 'code', 'inline code');
  equal(await answer.locator('pre code').textContent(), 'let card = 42;', 'a code block');
  equal(await answer.locator('li').allTextContents(), ['first point', 'second point'], 'a list');
  const a = answer.locator('a');
  equal(await a.count(), 1, 'one link (the javascript: one is not a link)');
  equal(
    await a.evaluate((l) => [l.getAttribute('href'), l.target, l.rel]),
    ['https://example.com/guide', '_blank', 'noopener noreferrer'],
    'the link opens in a new tab with rel="noopener noreferrer"'
  );
  equal(await answer.locator('img').count(), 0, 'no <img> from the message reached the DOM');
  check(final.includes('<img src=x onerror=alert(1)>'), 'the HTML shows as text');
  check(final.includes('[bad](javascript:alert(1))'), 'the javascript: link shows as text');
  await shot(page, '02-floating-answer');

  // A reload keeps the conversation (and the open panel).
  const before = s.rows.map((r) => [r.id, r.kind, r.text]);
  await page.reload();
  s = await until(page, (x) => x.open && x.rows.length === before.length, 'the conversation after a reload');
  equal(s.rows.map((r) => [r.id, r.kind, r.text]), before, 'the same messages, with the same ids, after a reload');
  await shot(page, '03-floating-reloaded');

  // An image: previewed in the composer, sent, then shown from parley.
  const cfg = await page.evaluate(async (u) => (await fetch(u)).json(), `${PARLEY}/widget/v1/${WIDGET_ID}/config`);
  const file = part(page, 'input[type="file"]');
  await file.setInputFiles({ name: 'too-big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(cfg.attachments.max_bytes + 1) });
  s = await until(page, (x) => /too large/i.test(x.status), 'the size limit message');
  equal(await part(page, '.chip').count(), 0, 'a file over the limit is not attached');
  await file.setInputFiles({ name: 'card.png', mimeType: 'image/png', buffer: png(96, 64) });
  const preview = part(page, '.chip img');
  await preview.waitFor();
  check((await preview.getAttribute('src')).startsWith('data:image/png'), 'the image is previewed before sending');
  await part(page, 'textarea').fill('Here is a photo of my card');
  await shot(page, '04-attachment-preview');
  await part(page, 'textarea').press('Enter');
  s = await until(page, (x) => x.rows.at(-1).kind === 'ai' && x.rows.at(-1).id && x.rows.at(-2).id, 'the answer to the photo');
  equal(await part(page, '.chip').count(), 0, 'the preview is cleared once sent');
  const sent = part(page, '.row.me').last().locator('img');
  await sent.waitFor();
  const img = await sent.evaluate((i) => ({ src: i.src, w: i.naturalWidth, h: i.naturalHeight }));
  check(/^https?:/.test(img.src) && !img.src.startsWith('data:'), 'the sent image comes from the server', img.src);
  await page.waitForFunction(() => {
    const i = [...document.querySelector('parley-chat').shadowRoot.querySelectorAll('.row.me img')].at(-1);
    return i && i.complete && i.naturalWidth > 0;
  });
  equal(await sent.evaluate((i) => [i.naturalWidth, i.naturalHeight]), [96, 64], 'and it loads (96×64)');
  await shot(page, '05-attachment-sent');

  // Handoff: an operator answers, labelled as the operator.
  await eventually(() => page.sessionId, 'the conversation id');
  const sid = page.sessionId;
  await setMode(sid, 'OPERATOR');
  await operatorSays(sid, "Hi, I'm Olga from the card team. **Let me check** that for you.");
  s = await until(page, (x) => x.rows.at(-1).kind === 'op', "the operator's message");
  equal(s.rows.at(-1).label, 'Operator', 'labelled as the operator');
  equal(await part(page, '.row.op').last().locator('strong').textContent(), 'Let me check', 'with markdown');
  await type(page, 'Thank you, Olga');
  s = await until(page, (x) => x.rows.at(-1).kind === 'me' && x.rows.at(-1).id, 'the reply to the operator');
  await page.waitForTimeout(400);
  s = await state(page);
  check(!s.typing && s.rows.at(-1).kind === 'me', 'the AI stays silent (and no typing dots) while an operator has the conversation');
  await shot(page, '06-operator');

  // Unread badge: messages that arrive while closed are counted; opening clears them.
  await part(page, 'button[aria-label="Close chat"]').click();
  await until(page, (x) => !x.open, 'closing');
  await operatorSays(sid, 'I found it: your new card was sent yesterday.');
  await until(page, (x) => x.badge === '1', 'the badge to show 1');
  await operatorSays(sid, 'It should arrive within three days.');
  s = await until(page, (x) => x.badge === '2', 'the badge to show 2');
  check(/2 new messages/.test(await launcher.getAttribute('aria-label')), 'the launcher announces the unread count');
  await shot(page, '07-unread-badge');
  await launcher.click();
  s = await until(page, (x) => x.open && x.badge === null, 'opening to clear the badge');
  check(s.rows.at(-1).text.includes('three days') && s.rows.at(-2).text.includes('sent yesterday'), 'both messages are there');
  await setMode(sid, 'REGULAR');

  // Accessibility: axe-core on the open widget, once its finite animations and
  // transitions are over (mid-fade colours are not the widget's colours).
  await page.evaluate(async () => {
    const root = document.querySelector('parley-chat')?.shadowRoot;
    const all = [...document.getAnimations(), ...(root ? root.getAnimations() : [])];
    const finite = all.filter((a) => a.effect?.getTiming().iterations !== Infinity);
    await Promise.all(finite.map((a) => a.finished.catch(() => {})));
  });
  await page.addScriptTag({ content: AXE_SOURCE });
  const axe = await page.evaluate(async () => {
    const r = await window.axe.run(document.querySelector('parley-chat'), {
      resultTypes: ['violations'],
      preload: false, // axe would re-fetch widget.css with XHR, which CORS (rightly) refuses
    });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => `${JSON.stringify(n.target)} ${n.failureSummary.replace(/\s+/g, ' ')}`) }));
  });
  for (const v of axe) console.log(`    axe: ${v.impact} ${v.id}: ${v.help}\n      ${v.nodes.join('\n      ')}`);
  const serious = axe.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  equal(serious.map((v) => v.id), [], 'axe-core finds no serious or critical violations');

  // A closed conversation offers a new one.
  await admin('POST', `/api/v1/conversations/${sid}/resolve`);
  s = await until(page, (x) => x.notice && /ended/.test(x.notice), 'the conversation-ended notice');
  check(!s.composer, 'the composer is hidden in a closed conversation');
  await shot(page, '08-closed');
  await part(page, '.notice button').click();
  s = await until(page, (x) => x.composer && x.rows.length === 1 && x.rows[0].text.startsWith(GREETING) && x.rows[0].id, 'a new conversation');
  await eventually(() => page.sessionId !== sid, 'the new conversation id');
  check(!!page.sessionId, 'it is a new conversation');
  equal(await focused(page), 'textarea', 'focus goes to the composer');

  // The page API.
  await page.evaluate(() => {
    window.__events = [];
    for (const type of ['message', 'open', 'close']) parley.on(type, (m) => window.__events.push(m ? `${type}:${m.role}` : type));
  });
  await page.evaluate(() => parley.send('Sent through the page API'));
  s = await until(page, (x) => x.rows.length === 3 && x.rows[2].kind === 'ai' && x.rows[2].id, 'the answer to parley.send');
  equal(s.rows[1].text, 'Sent through the page API', 'parley.send sends as the visitor');
  await page.evaluate(() => parley.close());
  await until(page, (x) => !x.open, 'parley.close()');
  await page.evaluate(() => parley.toggle());
  await until(page, (x) => x.open, 'parley.toggle()');
  const events = await page.evaluate(() => window.__events);
  equal(events, ['message:HUMAN', 'message:AI', 'close', 'open'], "on('message' | 'open' | 'close') events");
  const token = await page.evaluate((k) => localStorage.getItem(k), `parley:${WIDGET_ID}:token`);
  check(/^wvt_/.test(token || ''), 'the visitor token is kept in localStorage', token);
  await page.evaluate(() => parley.reset());
  s = await until(page, (x) => x.rows.length === 1 && x.rows[0].id, 'a fresh conversation after parley.reset()');
  const token2 = await page.evaluate((k) => localStorage.getItem(k), `parley:${WIDGET_ID}:token`);
  check(token2 && token2 !== token, 'reset() starts a new visitor');
  equal(page.errors, [], 'no errors in the console');
  await page.context().close();
});

await scenario('embedded widget', async () => {
  const page = await newPage();
  await page.goto(`${HOST}/embedded`);
  const s = await until(page, (x) => x.open && x.rows.length >= 1 && x.rows[0].id, 'the embedded conversation');
  equal(await part(page, '.launcher').count(), 0, 'no launcher');
  const boxes = await page.evaluate(() => {
    const box = (e) => { const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height].map(Math.round); };
    const host = document.querySelector('parley-chat');
    return { target: box(document.querySelector('#chat')), host: box(host), panel: box(host.shadowRoot.querySelector('.panel')) };
  });
  equal(boxes.host, boxes.target, 'the widget fills its container');
  equal(boxes.panel, boxes.target, 'and so does its panel');
  equal(await page.evaluate(() => document.querySelector('#chat > parley-chat') !== null), true, 'inside the target');
  check(s.rows[0].text.startsWith(GREETING), 'the greeting');
  await ask(page, 'What does the embedded mode look like?');
  await shot(page, '09-embedded');
  equal(page.errors, [], 'no errors in the console');
  await page.context().close();
});

await scenario('right-to-left (ar)', async () => {
  const page = await newPage({ ...desktop, locale: 'ar' });
  await page.goto(`${HOST}/ar`);
  await part(page, '.launcher').click();
  await until(page, (x) => x.open && x.rows.length >= 1, 'the panel');
  const look = await page.evaluate(() => {
    const root = document.querySelector('parley-chat').shadowRoot;
    const x = (s) => root.querySelector(s).getBoundingClientRect();
    return {
      dir: root.querySelector('.pw').getAttribute('dir'),
      lang: root.querySelector('.pw').getAttribute('lang'),
      direction: getComputedStyle(root.querySelector('.panel')).direction,
      placeholder: root.querySelector('textarea').placeholder,
      closeLeftOfTitle: x('header button[aria-label]').x < x('h2').x,
      sendLeftOfInput: x('.send').x < x('textarea').x,
    };
  });
  equal([look.dir, look.lang, look.direction], ['rtl', 'ar', 'rtl'], 'the panel is laid out right to left');
  equal(look.placeholder, 'اكتب رسالة…', 'the UI strings are Arabic');
  check(look.closeLeftOfTitle && look.sendLeftOfInput, 'the header and composer are mirrored', look);
  await ask(page, 'مرحبا، أريد بطاقة جديدة');
  const sides = await page.evaluate(() => {
    const root = document.querySelector('parley-chat').shadowRoot;
    const panel = root.querySelector('.panel').getBoundingClientRect();
    const mid = panel.x + panel.width / 2;
    const c = (s) => { const r = root.querySelector(s).getBoundingClientRect(); return r.x + r.width / 2; };
    return { me: c('.row.me .bubble') < mid, ai: c('.row.ai .bubble') > mid };
  });
  equal(sides, { me: true, ai: true }, "the visitor's bubbles are on the left, the agent's on the right");
  await shot(page, '10-rtl-ar');
  await page.context().close();
});

await scenario('strict Content-Security-Policy', async () => {
  const page = await newPage();
  // Installed through the DevTools protocol, which the page's CSP does not govern.
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`), true);
  });
  const response = await page.goto(`${HOST}/csp`);
  check(/default-src 'none'/.test(response.headers()['content-security-policy'] || ''), 'the page is served with a strict CSP');
  await part(page, '.launcher').click();
  await until(page, (x) => x.open && x.rows.length >= 1 && x.rows[0].id, 'the panel');
  const styled = await part(page, '.launcher').evaluate((b) => getComputedStyle(b).borderRadius);
  equal(styled, '50%', 'the stylesheet loaded');
  await part(page, 'input[type="file"]').setInputFiles({ name: 'csp.png', mimeType: 'image/png', buffer: png(32, 32) });
  await part(page, '.chip img').waitFor();
  const s = await ask(page, 'Does this work under a strict policy?');
  check(s.rows.at(-1).text.startsWith('Thanks!'), 'the answer arrives');
  await page.waitForFunction(() => {
    const i = document.querySelector('parley-chat').shadowRoot.querySelector('.row.me img');
    return i && i.complete && i.naturalWidth > 0;
  });
  await shot(page, '11-strict-csp');
  await page.waitForTimeout(300); // reports are dispatched asynchronously
  equal(await page.evaluate(() => window.__violations), [], 'no CSP violation');
  equal(page.errors.filter((e) => /Content Security Policy/i.test(e)), [], 'no CSP errors in the console');
  await page.context().close();
});

await scenario('an origin that is not allowed', async () => {
  const page = await newPage();
  const config = page.waitForResponse((r) => r.url().endsWith(`/widget/v1/${WIDGET_ID}/config`));
  await page.goto(`${OTHER}/floating`);
  const r = await config;
  equal(r.status(), 403, 'the config call is refused with 403');
  const body = await r.json().catch(() => null);
  equal(body && body.error && body.error.code, 'origin_not_allowed', 'origin_not_allowed');
  await part(page, '.launcher').click();
  const s = await until(page, (x) => x.open && x.notice, 'the panel');
  equal(s.notice, 'Chat is not available on this site.', 'the widget says the chat is not available on this site');
  check(!s.composer, 'and offers no composer');
  await shot(page, '12-not-allowed');
  await page.context().close();
});

await scenario('small screen (375×667)', async () => {
  const page = await newPage({ viewport: { width: 375, height: 667 }, locale: 'en-US', reducedMotion: 'reduce' });
  await page.goto(`${HOST}/floating`);
  await part(page, '.launcher').click();
  await until(page, (x) => x.open && x.rows.length >= 1, 'the panel');
  const box = await part(page, '.panel').boundingBox();
  equal([box.x, box.y, box.width, box.height], [0, 0, 375, 667], 'the open panel is full screen');
  equal(await part(page, '.panel').evaluate((p) => getComputedStyle(p).animationName), 'none', 'no animation with prefers-reduced-motion');
  await shot(page, '13-mobile');
  await page.context().close();
});

await scenario('a dropped socket reconnects without losing or repeating messages', async () => {
  const page = await newPage();
  await page.goto(`${HOST}/proxied`);
  await part(page, '.launcher').click();
  await until(page, (x) => x.open && x.rows.length >= 1 && x.rows[0].id, 'the panel');
  await ask(page, 'First message before the cut');
  await eventually(() => page.sessionId, 'the conversation id');
  const sid = page.sessionId;

  await control('cut'); // every connection closed, new ones refused
  await until(page, (x) => /Reconnecting/.test(x.status), 'the widget to notice the dropped socket');
  await setMode(sid, 'OPERATOR');
  await operatorSays(sid, 'Sent while you were offline');
  await page.waitForTimeout(1200); // at least one refused reconnection attempt
  check(!(await state(page)).rows.some((r) => r.text.includes('while you were offline')), 'not shown while cut off');
  await control('restore');
  let s = await until(page, (x) => x.rows.some((r) => r.text.includes('while you were offline')) && x.status === '', 'the missed message after reconnecting', 20000);
  await page.waitForTimeout(500); // anything doubled would show by now
  s = await state(page);
  equal(s.rows.filter((r) => r.text.includes('while you were offline')).length, 1, 'the missed message appears once');

  await setMode(sid, 'REGULAR');
  s = await ask(page, 'And after the reconnect?');
  check(s.rows.at(-1).text.includes('after the reconnect'), 'the next message is answered');

  // A send that fails offers a retry; the retry is sent once (same idempotency key).
  await control('cut');
  await type(page, 'Sent while the line was down');
  s = await until(page, (x) => x.rows.at(-1).failed, 'the failed send');
  await shot(page, '15-send-failed');
  await control('restore');
  await part(page, '.row.me .retry button').click();
  s = await until(page, (x) => x.rows.at(-1).kind === 'ai' && x.rows.at(-1).text.includes('line was down') && x.rows.at(-1).id, 'the answer to the retried message', 20000);
  check(!s.rows.some((r) => r.failed || r.sending), 'nothing left failed or pending');

  const ids = s.rows.map((r) => r.id);
  check(ids.every(Boolean) && new Set(ids).size === ids.length, 'no message is shown twice', ids);
  const asc = ids.map(Number);
  check(asc.every((v, i) => i === 0 || v > asc[i - 1]), 'in order', ids);
  console.log(`    (the conversation: ${JSON.stringify(s.rows.map((r) => `${r.kind}: ${r.text.slice(0, 40)}`))})`);
  equal(
    s.rows.filter((r) => r.kind !== 'ai').map((r) => `${r.kind}: ${r.text}`),
    ['me: First message before the cut', 'op: Sent while you were offline', 'me: And after the reconnect?', 'me: Sent while the line was down'],
    "the visitor's and the operator's messages, each once, in order"
  );
  // What the server has is what the widget shows.
  const log = await admin('GET', `/api/v1/conversations/${sid}`);
  const server = (log.messages || log.logs || []).filter((m) => ['HUMAN', 'AI', 'OPERATOR'].includes(m.role)).map((m) => String(m.id));
  equal(ids, server, "the widget shows exactly the server's messages");
  await shot(page, '14-reconnected');
  await page.context().close();
});

// setUser with identity verification: the same user on another device gets their history;
// a wrong hash leaves the visitor anonymous.
await scenario('identified user on two devices', async () => {
  const secret = 'a-secret-the-site-and-parley-share';
  await putSettings(
    {
      enabled: true,
      allowed_origins: [HOST],
      title: 'Debit Card Assistant',
      subtitle: 'Usually answers in seconds',
      identity_verification: { enabled: true, secret },
    },
    (c) => c.identity_verification === true
  );
  const user = { id: 'customer-42', name: 'Dana Scully', email: 'dana@example.com' };
  const hash = crypto.createHmac('sha256', secret).update(user.id).digest('hex');
  const device = async (u) => {
    const page = await newPage();
    await page.goto(`${HOST}/floating`);
    await page.waitForFunction(() => window.parley && window.parley.setUser);
    await page.evaluate((x) => parley.setUser(x), u);
    await part(page, '.launcher').click();
    await until(page, (x) => x.open && x.rows.length >= 1 && x.rows.every((r) => r.id), 'the panel');
    return page;
  };
  const laptop = await device({ ...user, hash });
  await ask(laptop, 'I am on my laptop');
  const phone = await device({ ...user, hash });
  const s = await until(phone, (x) => x.rows.some((r) => r.text === 'I am on my laptop'), "the laptop's conversation on the phone");
  equal(s.rows.map((r) => r.kind), ['ai', 'me', 'ai'], 'the whole conversation, once');
  await shot(phone, '16-identified-other-device');
  const stranger = await device({ ...user, hash: '00'.repeat(32) });
  const t = await state(stranger);
  equal(t.rows.map((r) => r.kind), ['ai'], 'a wrong hash gets a fresh anonymous conversation, not the user history');
  for (const p of [laptop, phone, stranger]) await p.context().close();
});

// The demo page parley serves on its own origin: both widgets, under its strict CSP.
await scenario('demo page', async () => {
  await putSettings(
    {
      enabled: true,
      allowed_origins: [HOST, PARLEY],
      title: 'Debit Card Assistant',
      subtitle: 'Usually answers in seconds',
    },
    () => true
  );
  const page = await newPage();
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`), true);
  });
  const config = page.waitForResponse((r) => r.url().endsWith(`/widget/v1/${WIDGET_ID}/config`));
  await page.goto(`${PARLEY}/widget/demo/${WIDGET_ID}`);
  const r = await config;
  // Browsers send no Origin header on a same-origin GET, so parley must admit its own
  // origin some other way (Sec-Fetch-Site: same-origin) for its demo page to work.
  const sent = await r.request().allHeaders();
  const why = r.status() === 200 ? '' : ` ${await r.text()}`;
  check(r.status() === 200, `the demo page's config call is admitted (status ${r.status()}; Origin sent: ${sent.origin ?? 'none'}, Sec-Fetch-Site: ${sent['sec-fetch-site']})${why}`);
  const hosts = page.locator('parley-chat');
  await page.waitForFunction(() => document.querySelectorAll('parley-chat').length === 2);
  const embedded = page.locator('#chat parley-chat');
  await embedded.locator('.row.ai').first().waitFor();
  equal(await embedded.locator('.launcher').count(), 0, 'the embedded widget is in #chat');
  equal(await hosts.locator('.launcher').count(), 1, 'and the floating one has its launcher');
  const box = await embedded.boundingBox();
  check(box.width > 300 && box.height >= 500, 'the embedded widget has the demo container size', box);
  await embedded.locator('textarea').fill('Hello from the demo page');
  await embedded.locator('textarea').press('Enter');
  await embedded.locator('.row.ai', { hasText: 'Hello from the demo page' }).waitFor();
  await shot(page, '17-demo-page');
  equal(await page.evaluate(() => window.__violations), [], 'no CSP violation on the demo page');
  equal(page.errors, [], 'no errors in the console');
  await page.context().close();
});

await scenario('size budget', async () => {
  const js = await gzipSize(`${PARLEY}/widget.js`);
  const css = await gzipSize(`${PARLEY}/widget.css`);
  const total = js.gzip + css.gzip;
  console.log(`    widget.js ${js.plain} B (${js.gzip} B gzip${js.served ? ', served' : ''}), widget.css ${css.plain} B (${css.gzip} B gzip${css.served ? ', served' : ''}); total ${total} B gzip`);
  check(total <= SIZE_BUDGET, `widget.js + widget.css ≤ 30 KB gzip (${(total / 1024).toFixed(1)} KB)`);
});

await browser.close();
const failed = results.filter((r) => !r.ok);
console.log(`\n${results.length - failed.length}/${results.length} scenarios passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
for (const f of failed) console.log(`FAILED: ${f.name}: ${f.error}`);
process.exit(failed.length ? 1 : 0);

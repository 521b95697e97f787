// The host and guest pages through a serve restart: opens the studio (host link) and a guest
// page (invite link, joins once), then reports what the pages show while serve is killed and
// started again by tests/serve_restart.rs (and benches/serve_restart.rs):
//
//   node restart.mjs <host url> <guest url> <artifact dir>
//
// stdout lines: `READY {"host": id, "guest": id}` once both publish; then
// `STATE {"host": {state, id}, "guest": {state, id}}` on every change (polled every 50 ms);
// on stdin's end, `HISTORY {"host": [...], "guest": [...]}` (every state each page showed,
// with its time) and the pages' console logs in the artifact dir, then exit.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [hostUrl, guestUrl, artifacts] = process.argv.slice(2);
if (!hostUrl || !guestUrl || !artifacts) {
  console.error('usage: node restart.mjs <host url> <guest url> <artifact dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--no-first-run',
    '--mute-audio',
  ],
});

const consoleLogs = {};
async function open(name, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: new URL(url).origin });
  const page = await context.newPage();
  consoleLogs[name] = [];
  const log = (line) => consoleLogs[name].push(`${new Date().toISOString()} ${line}`);
  page.on('console', (msg) => log(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => log(`[pageerror] ${err.message}`));
  await page.goto(url);
  return page;
}

async function waitFor(page, what, probe, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await page.evaluate(probe);
      if (last) return last;
    } catch (e) {
      last = `error: ${e.message}`;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

/** What a page shows now: the host's publish pill, the guest's banner. */
const probes = {
  host: () => ({
    state: document.getElementById('publish-state')?.dataset.state ?? '',
    id: window.costream?.participantId ?? null,
  }),
  guest: () => ({ state: document.body.dataset.state ?? '', id: window.costream?.participantId ?? null }),
};

let pages;
try {
  const host = await open('host', hostUrl);
  const guest = await open('guest', guestUrl);
  pages = { host, guest };
  const hostId = await waitFor(host, 'host publishes', () => window.costream?.participantId);
  await waitFor(guest, 'join enabled', () => !document.getElementById('join').disabled);
  await guest.fill('#display-name', 'Guest page');
  await guest.click('#join');
  const guestId = await waitFor(guest, 'guest publishes', () => window.costream?.participantId);
  console.log(`READY ${JSON.stringify({ host: hostId, guest: guestId })}`);
} catch (e) {
  console.log(`FAILED ${e.message}`);
  await browser.close();
  process.exit(1);
}

let ending = false;
let last = '';
async function poll() {
  while (!ending) {
    const now = {};
    for (const [name, page] of Object.entries(pages)) {
      try {
        now[name] = await page.evaluate(probes[name]);
      } catch (e) {
        now[name] = { state: `error: ${e.message}`, id: null };
      }
    }
    const line = JSON.stringify(now);
    if (line !== last && !ending) {
      console.log(`STATE ${line}`);
      last = line;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
const polling = poll();

async function finish() {
  if (ending) return;
  ending = true;
  await polling;
  const history = {};
  for (const [name, page] of Object.entries(pages)) {
    history[name] = await page.evaluate(() => window.costream?.history ?? []).catch(() => []);
    await page.screenshot({ path: join(artifacts, `${name}.png`) }).catch(() => {});
  }
  writeFileSync(join(artifacts, 'console.json'), JSON.stringify(consoleLogs, null, 2));
  console.log(`HISTORY ${JSON.stringify(history)}`);
  await browser.close();
  process.exit(0);
}
process.stdin.on('end', finish);
process.stdin.resume();
process.on('SIGTERM', finish);

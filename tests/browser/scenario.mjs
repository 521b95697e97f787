// The pages end to end in a real browser: Debian's Chromium (never a downloaded one) with a
// fake camera and microphone, driven by playwright-core. Run by tests/browser.rs against a real
// `costream serve`:
//
//   node scenario.mjs <server base URL> <artifact dir> [room creation token]
//
// With a room creation token (a server with API keys) the host starts from the room creation
// link `/#token=…`, as an operator would hand it out.
//
// Each step is a named check; a failed check is recorded and the scenario goes on with what
// does not depend on it, so one run reports everything. The last stdout line is
// `RESULT <json>`: { checks: {name: {ok, ms, detail|error}}, metrics: {...}, screenshots: [...] }.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { measureHls, openHlsPage } from './hls.mjs';

const [base, artifacts, creationToken] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error('usage: node scenario.mjs <base url> <artifact dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const checks = {};
const metrics = {};
const screenshots = [];
const consoleLogs = {};
/** Every URL the pages requested: tokens must never be in one. */
const requestedUrls = [];
/** WHIP offers posted, per page: a device switch must not add one. */
const whipPosts = {};

/** Runs one named check; returns its value, or undefined when it failed. */
async function check(name, fn) {
  const started = Date.now();
  try {
    const detail = await fn();
    checks[name] = { ok: true, ms: Date.now() - started, detail: detail ?? null };
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
    return detail ?? true;
  } catch (e) {
    checks[name] = { ok: false, ms: Date.now() - started, error: String(e?.message ?? e) };
    console.log(`FAIL ${name}: ${e?.message ?? e}`);
    return undefined;
  }
}

function skip(name, reason) {
  checks[name] = { ok: false, ms: 0, error: `skipped: ${reason}` };
  console.log(`SKIP ${name}: ${reason}`);
}

/** Polls `probe` (a function evaluated in the page) until it returns a truthy value. */
async function waitInPage(page, what, probe, arg, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await page.evaluate(probe, arg);
      if (last) return last;
    } catch (e) {
      last = `error: ${e.message}`;
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

async function shoot(page, name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  screenshots.push(path);
}

function logConsole(page, name) {
  consoleLogs[name] = [];
  page.on('console', (msg) => consoleLogs[name].push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => consoleLogs[name].push(`[pageerror] ${err.message}`));
}

// --- in-page probes (run inside the browser) ---

/** Remote <video> tiles of one participant: size and rendered frames. */
function remoteVideo(participantId) {
  const video = document.querySelector(`video.remote[data-participant-id="${participantId}"]`);
  if (!video) return null;
  return {
    width: video.videoWidth,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    paused: video.paused,
  };
}

/** Inbound RTP of the subscription to one participant, plus the one-way delay estimate. */
async function inbound(participantId) {
  const pc = window.costream.subscriptions()[participantId];
  if (!pc) return null;
  const out = { audio: null, video: null, rttMs: null };
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind === 'audio' || r.kind === 'video')) {
      out[r.kind] = {
        bytes: r.bytesReceived ?? 0,
        jitterBufferMs:
          r.jitterBufferEmittedCount > 0
            ? (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount
            : null,
        framesDecoded: r.framesDecoded ?? null,
      };
    }
    if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) {
      out.rttMs = 1000 * r.currentRoundTripTime;
    }
  });
  return out;
}

/**
 * Mean colour of a region (fractions of the picture) of a <video>'s current frame, drawn at its
 * own size into a canvas: what the page shows, after the browser's YUV-to-RGB conversion by the
 * stream's colour description.
 */
function videoRegionColour({ id, region }) {
  const video = document.getElementById(id);
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0);
  const x = Math.round(region.x * canvas.width);
  const y = Math.round(region.y * canvas.height);
  const w = Math.max(1, Math.round(region.w * canvas.width));
  const h = Math.max(1, Math.round(region.h * canvas.height));
  const data = ctx.getImageData(x, y, w, h).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) {
    sum[0] += data[i];
    sum[1] += data[i + 1];
    sum[2] += data[i + 2];
  }
  const n = data.length / 4;
  return sum.map((v) => Math.round(v / n));
}

// --- helpers run from node ---

async function framesAdvance(page, participantId) {
  const first = await waitInPage(
    page,
    `video of ${participantId} has a size`,
    (id) => {
      const video = document.querySelector(`video.remote[data-participant-id="${id}"]`);
      return video && video.videoWidth > 0
        ? { width: video.videoWidth, frames: video.getVideoPlaybackQuality().totalVideoFrames }
        : null;
    },
    participantId,
    20000,
  );
  await page.waitForTimeout(1000);
  const second = await page.evaluate(remoteVideo, participantId);
  if (!(second && second.frames > first.frames)) {
    throw new Error(`frames not advancing: ${JSON.stringify(first)} then ${JSON.stringify(second)}`);
  }
  return { width: second.width, framesPerSecond: second.frames - first.frames };
}

async function audioFlows(page, participantId) {
  const first = await waitInPage(
    page,
    `audio from ${participantId}`,
    async (id) => {
      const pc = window.costream.subscriptions()[id];
      if (!pc) return null;
      let bytes = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') bytes = r.bytesReceived ?? 0;
      });
      return bytes > 0 ? bytes : null;
    },
    participantId,
    15000,
  );
  await page.waitForTimeout(1000);
  const second = await page.evaluate(inbound, participantId);
  if (!(second?.audio?.bytes > first)) {
    throw new Error(`audio bytes not growing: ${first} then ${second?.audio?.bytes}`);
  }
  return { bytesPerSecond: second.audio.bytes - first };
}

/** One-way delay through the server, from the receiver's stats: jitter buffer + RTT/2. */
async function latency(page, participantId) {
  const stats = await page.evaluate(inbound, participantId);
  if (!stats?.video || stats.rttMs === null) throw new Error(`no stats: ${JSON.stringify(stats)}`);
  const half = stats.rttMs / 2;
  return {
    rttMs: round(stats.rttMs),
    videoJitterBufferMs: round(stats.video.jitterBufferMs),
    audioJitterBufferMs: round(stats.audio?.jitterBufferMs),
    videoOneWayMs: round(stats.video.jitterBufferMs + half),
    audioOneWayMs: stats.audio ? round(stats.audio.jitterBufferMs + half) : null,
  };
}

function round(x) {
  return x === null || x === undefined ? null : Math.round(x * 10) / 10;
}

async function http(method, path, token) {
  const response = await fetch(base + path, {
    method,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  return response.status;
}

/** The first `status` event of the room's event stream as seen with `token`. */
async function firstStatusEvent(roomId, token) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 5000);
  try {
    const response = await fetch(`${base}/api/v1/rooms/${roomId}/events`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    if (response.status !== 200) throw new Error(`events: ${response.status}`);
    const reader = response.body.getReader();
    let text = '';
    while (!text.includes('\n\n')) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    controller.abort();
    return text;
  } finally {
    clearTimeout(timer);
  }
}

// --- the scenario ---

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // launch() gives every run a fresh temporary profile (user-data-dir).
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    // Three fake cameras and microphones, so switching devices can be tested. Chromium's fake
    // cameras differ in pixel format: the second is Y16 (a depth camera), which the video
    // encoder cannot take (it stops sending frames); the third is MJPEG, a real camera's.
    '--use-fake-device-for-media-stream=device-count=3',
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

const origin = new URL(base).origin;
const newPage = async (name) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], {
    origin,
  });
  const page = await context.newPage();
  logConsole(page, name);
  whipPosts[name] = 0;
  page.on('request', (request) => {
    requestedUrls.push(request.url());
    if (request.method() === 'POST' && new URL(request.url()).pathname.startsWith('/whip/')) {
      whipPosts[name] += 1;
    }
  });
  return { context, page };
};

let exitCode = 0;
try {
  const host = await newPage('host');
  const viewer = await newPage('watch');
  const guest = await newPage('guest');

  // 1. Start a room from the home page; the studio opens with the camera publishing.
  const room = await check('host creates a room from /', async () => {
    await host.page.goto(creationToken ? `${base}/#token=${creationToken}` : `${base}/`);
    if (creationToken) {
      await waitInPage(host.page, 'creation token out of the address bar', () => location.hash === '');
    }
    await host.page.fill('#name', 'Browser test show');
    await host.page.selectOption('#preset', '720p30');
    await shoot(host.page, 'index');
    await Promise.all([host.page.waitForURL(/\/host\//), host.page.click('#create-button')]);
    const roomId = decodeURIComponent(new URL(host.page.url()).pathname.split('/')[2]);
    const token = await host.page.evaluate((id) => sessionStorage.getItem(`costream:host:${id}`), roomId);
    if (!token) throw new Error('host token not kept in sessionStorage');
    return { roomId, hostToken: token };
  });
  // Tokens stay out of the recorded result.
  if (checks['host creates a room from /']) checks['host creates a room from /'].detail = { roomId: room?.roomId };
  if (!room) throw new Error('no room: nothing else can run');
  const { roomId, hostToken } = room;

  await check('studio link keeps the token out of the address bar', async () => {
    await waitInPage(host.page, 'fragment dropped', () => location.hash === '');
  });

  const hostId = await check('host publishes over WHIP', async () =>
    waitInPage(
      host.page,
      'host connected',
      () =>
        document.getElementById('publish-state').textContent === 'connected' &&
        window.costream.publisher?.connectionState === 'connected' &&
        window.costream.participantId,
      null,
      20000,
    ),
  );

  const inviteLink = await check('studio shows the invite and viewer links', async () => {
    const invite = await waitInPage(host.page, 'invite link', () => document.getElementById('invite-link').value);
    const watch = await host.page.inputValue('#watch-link');
    if (!invite.includes(`/join/${roomId}#token=`)) throw new Error(`invite link ${invite}`);
    if (invite.includes(hostToken)) throw new Error('the invite link carries the host token');
    if (!watch.endsWith(`/watch/${roomId}`)) throw new Error(`viewer link ${watch}`);
    return invite;
  });
  if (checks['studio shows the invite and viewer links']?.ok) {
    checks['studio shows the invite and viewer links'].detail = 'invite and viewer links shown';
  }
  const guestToken = inviteLink ? new URL(inviteLink).hash.replace('#token=', '') : null;

  // 2. A viewer waits on the watch page while the room is offline.
  await check('watch page shows offline before going live', async () => {
    await viewer.page.goto(`${base}/watch/${roomId}`);
    await waitInPage(viewer.page, 'offline state', () => document.body.dataset.state === 'offline');
  });

  // 3. Go live: the studio shows the output live with a bitrate; the viewer page starts playing.
  let wentLiveAt = 0;
  await check('host goes live', async () => {
    await host.page.click('#go-live');
    wentLiveAt = Date.now();
    await waitInPage(host.page, 'broadcast live', () => document.getElementById('broadcast').textContent === 'live');
  });
  await check('viewer page plays the mix from the built-in origin', async () => {
    const first = await waitInPage(
      viewer.page,
      'viewer playing',
      () => {
        const v = document.getElementById('player');
        return document.body.dataset.state === 'live' && v.currentTime > 0 ? v.currentTime : null;
      },
      null,
      30000,
    );
    metrics.go_live_to_viewer_playing_ms = Date.now() - wentLiveAt;
    // Chromium has Media Source Extensions: the page picks HTTP-FLV (HLS is for iOS).
    const kind = await viewer.page.evaluate(() => document.body.dataset.player);
    if (kind !== 'flv') throw new Error(`watch page player ${kind}, expected flv`);
    await viewer.page.waitForTimeout(1500);
    const second = await viewer.page.evaluate(() => document.getElementById('player').currentTime);
    if (!(second > first)) throw new Error(`currentTime not advancing: ${first} then ${second}`);
    const size = await viewer.page.evaluate(() => {
      const v = document.getElementById('player');
      return { width: v.videoWidth, height: v.videoHeight };
    });
    return { ...size, advancedSeconds: round(second - first) };
  });
  // 3b. HLS from the origin in hls.js (npm, pinned): first as LL-HLS, then as plain HLS.
  // Latency = now − the playing frame's EXT-X-PROGRAM-DATE-TIME, which the origin stamps when a
  // segment's first frame reaches it (so it leaves out the mixer's own ~0.1 s).
  await check('hls.js plays the LL-HLS and the plain HLS stream (latency measured)', async () => {
    const { context, page } = await newPage('hls');
    const partRequests = [];
    page.on('request', (request) => {
      if (/\/part-\d+-\d+\.m4s$|_HLS_msn=/.test(request.url())) partRequests.push(request.url());
    });
    try {
      await openHlsPage(page, base);
      const measure = (lowLatencyMode) =>
        measureHls(page, `${base}/live/${roomId}/index.m3u8`, lowLatencyMode);
      const low = await measure(true);
      const llParts = partRequests.length;
      const plain = await measure(false);
      for (const [name, run] of [['LL-HLS', low], ['HLS', plain]]) {
        if (run.fatal) throw new Error(`${name}: hls.js error ${run.fatal}`);
        if (!(run.advancedS > 3)) throw new Error(`${name}: playback did not advance: ${JSON.stringify(run)}`);
        if (run.width !== 1280) throw new Error(`${name}: picture ${run.width} wide`);
      }
      if (llParts === 0) throw new Error('LL-HLS mode fetched no parts and made no blocking reload');
      // Targets: LL-HLS ≤ 3 s, plain ≤ 8 s; the bounds here leave room for a loaded CI machine.
      if (!(low.latencyMs < 5000)) throw new Error(`LL-HLS latency ${low.latencyMs} ms`);
      if (!(plain.latencyMs < 12000)) throw new Error(`HLS latency ${plain.latencyMs} ms`);
      if (!(low.latencyMs < plain.latencyMs)) {
        throw new Error(`LL-HLS (${low.latencyMs} ms) is not ahead of plain HLS (${plain.latencyMs} ms)`);
      }
      metrics.ll_hls_latency_ms = low.latencyMs;
      metrics.hls_latency_ms = plain.latencyMs;
      metrics.ll_hls_startup_ms = low.startupMs;
      return { llHls: low, hls: plain, llRequests: llParts };
    } finally {
      await context.close();
    }
  });
  await check('studio shows the output live with bitrate and duration', async () =>
    waitInPage(
      host.page,
      'output live',
      () => {
        const row = document.querySelector('#outputs li');
        if (!row) return null;
        const state = row.querySelector('.state')?.textContent;
        const bitrate = row.querySelector('.bitrate')?.textContent ?? '';
        const duration = row.querySelector('.output-duration')?.textContent ?? '';
        return state === 'live' && /[1-9]/.test(bitrate) && duration !== '–'
          ? { state, bitrate, duration }
          : null;
      },
      null,
      20000,
    ),
  );

  await check('host records the program from the studio and the part is listed complete', async () => {
    await host.page.click('#record');
    await waitInPage(host.page, 'recording', () => document.getElementById('record-state').textContent === 'recording');
    await host.page.waitForTimeout(3000);
    await host.page.click('#stop-record');
    const row = await waitInPage(
      host.page,
      'a complete part listed',
      () => {
        const li = document.querySelector('#recordings li');
        const state = li?.querySelector('.state')?.textContent;
        return state === 'complete' ? { state, stats: li.querySelector('.output-stats').textContent } : null;
      },
      null,
      20000,
    );
    const response = await fetch(`${base}/api/v1/rooms/${roomId}/recordings`, {
      headers: { Authorization: `Bearer ${hostToken}` },
    });
    const list = await response.json();
    if (!Array.isArray(list) || list.length !== 1 || !(list[0].size_bytes > 0) || !(list[0].duration_s >= 2)) {
      throw new Error(`recordings: ${JSON.stringify(list)}`);
    }
    return { ...row, duration_s: list[0].duration_s, size_bytes: list[0].size_bytes };
  });

  await check('host switches camera and mutes the mic while live, without renegotiation', async () => {
    const postsBefore = whipPosts.host;
    const options = await host.page.$$eval('#camera option', (list) => list.map((o) => o.value));
    const current = await host.page.inputValue('#camera');
    const other = options[2];
    if (!other || other === current) throw new Error(`cameras: ${JSON.stringify(options)}`);
    await host.page.selectOption('#camera', other);
    await waitInPage(
      host.page,
      'the video sender uses the new camera',
      (id) => {
        const sender = window.costream.publisher
          .getSenders()
          .find((s) => s.track?.kind === 'video');
        return sender?.track.getSettings().deviceId === id && sender.track.readyState === 'live';
      },
      other,
    );
    await host.page.click('#toggle-mic');
    const muted = await host.page.evaluate(
      () => window.costream.publisher.getSenders().find((s) => s.track?.kind === 'audio').track.enabled,
    );
    await host.page.click('#toggle-mic');
    const unmuted = await host.page.evaluate(
      () => window.costream.publisher.getSenders().find((s) => s.track?.kind === 'audio').track.enabled,
    );
    const pc = await host.page.evaluate(() => ({
      connection: window.costream.publisher.connectionState,
      signaling: window.costream.publisher.signalingState,
    }));
    if (muted !== false || unmuted !== true) throw new Error(`mic mute: ${muted}, unmute: ${unmuted}`);
    if (pc.connection !== 'connected' || pc.signaling !== 'stable') throw new Error(JSON.stringify(pc));
    if (whipPosts.host !== postsBefore) throw new Error('the switch posted a new WHIP offer');
    // The new camera's frames go out on the same sender.
    const sent = () =>
      host.page.evaluate(async () => {
        let out = null;
        (await window.costream.publisher.getStats()).forEach((r) => {
          if (r.type === 'outbound-rtp' && r.kind === 'video') {
            out = { frames: r.framesEncoded, keyFrames: r.keyFramesEncoded, bytes: r.bytesSent, w: r.frameWidth };
          }
        });
        return out;
      });
    const before = await sent();
    await host.page.waitForTimeout(1000);
    const after = await sent();
    if (!(after?.frames > before?.frames)) {
      throw new Error(`video not flowing after the switch: ${JSON.stringify([before, after])}`);
    }
    return { before, after };
  });

  // 3b. Colour: with the host alone in the room the program is the host's camera full-frame;
  // a flat patch of the fake camera (top right, away from the moving pac-man and the clock)
  // must look the same in the studio's self view and in the viewer's player (H.264 from the
  // origin, decoded by its VUI). A BT.601/BT.709 mix-up moves it by 20-60. The camera is the
  // MJPEG one the host switched to: Chromium's default fake camera paints its background as
  // Y = U = V = 0, a colour no camera can produce (out of gamut), which shows as (0, 135, 0)
  // only after clamping; converted into a BT.709 program it lands 11 away. The MJPEG camera's
  // background is a real colour.
  await check('the mix shows the camera in its own colours (within 6 per channel)', async () => {
    const region = { x: 0.8, y: 0.08, w: 0.12, h: 0.12 };
    const tolerance = 6;
    let own = null;
    let mixed = null;
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline) {
      own = await host.page.evaluate(videoRegionColour, { id: 'preview', region });
      mixed = await viewer.page.evaluate(videoRegionColour, { id: 'player', region });
      if (own && mixed && own.every((c, i) => Math.abs(c - mixed[i]) <= tolerance)) {
        metrics.camera_colour = own;
        metrics.program_colour = mixed;
        return { camera: own, program: mixed };
      }
      await host.page.waitForTimeout(300);
    }
    throw new Error(`camera ${JSON.stringify(own)} but program ${JSON.stringify(mixed)}`);
  });
  // 4. A guest joins from the invite link in another browser context.
  const guestId =
    inviteLink &&
    (await check('guest joins from the invite link', async () => {
      await guest.page.goto(inviteLink);
      await waitInPage(guest.page, 'join enabled', () => !document.getElementById('join').disabled, null, 15000);
      await guest.page.fill('#display-name', 'Guest A');
      await guest.page.click('#join');
      await waitInPage(guest.page, 'guest live', () => document.body.dataset.state === 'live', null, 20000);
      return guest.page.evaluate(() => window.costream.participantId);
    }));

  if (guestId && hostId) {
    await check('host page plays the guest video', () => framesAdvance(host.page, guestId));
    await check('guest page plays the host video', () => framesAdvance(guest.page, hostId));
    await check('host hears the guest (inbound audio bytes growing)', () => audioFlows(host.page, guestId));
    await check('guest hears the host (inbound audio bytes growing)', () => audioFlows(guest.page, hostId));
    const hostSide = await check('latency guest to host', () => latency(host.page, guestId));
    const guestSide = await check('latency host to guest', () => latency(guest.page, hostId));
    if (hostSide) metrics.guest_to_host = hostSide;
    if (guestSide) metrics.host_to_guest = guestSide;
    // Chromium sends RTCP sender reports (audio every ~5 s), from which serve measures each
    // publisher's A/V offset; the mixer reports its latency and whether the program moves.
    const quality = await check('studio quality panel: mixer latency, moving program, guest on air and A/V offset', async () =>
      waitInPage(
        host.page,
        'quality figures',
        (id) => {
          const latency = document.getElementById('quality-latency').textContent;
          const program = document.getElementById('quality-program').textContent;
          const row = document.querySelector(`#quality-people li[data-participant-id="${id}"]`)?.textContent ?? '';
          const ok = /^\d+ ms/.test(latency) && program === 'moving' && /on air \d+ ms/.test(row)
            && /A\/V (in sync|picture \d+ ms late|sound \d+ ms late)/.test(row);
          return ok ? { latency, program, row } : null;
        },
        guestId,
        30000,
      ),
    );
    if (quality) metrics.quality_panel = quality;
  } else {
    for (const name of ['host page plays the guest video', 'guest page plays the host video']) {
      skip(name, 'no guest or host session');
    }
  }

  // 5. Roles: the guest token cannot run the show, and its event stream has no output URLs.
  if (guestToken) {
    await check('guest token on host-only endpoints is 403', async () => {
      const results = {
        'POST live': await http('POST', `/api/v1/rooms/${roomId}/live`, guestToken),
        'DELETE live': await http('DELETE', `/api/v1/rooms/${roomId}/live`, guestToken),
        'DELETE room': await http('DELETE', `/api/v1/rooms/${roomId}`, guestToken),
        'GET links': await http('GET', `/api/v1/rooms/${roomId}/links`, guestToken),
        'DELETE participant': await http(
          'DELETE',
          `/api/v1/rooms/${roomId}/participants/${hostId || 'x'}`,
          guestToken,
        ),
      };
      const wrong = Object.entries(results).filter(([, status]) => status !== 403);
      if (wrong.length) throw new Error(`not 403: ${JSON.stringify(results)}`);
      return results;
    });
    await check("guest's event stream has no output URLs", async () => {
      const text = await firstStatusEvent(roomId, guestToken);
      if (!text.includes('event: status')) throw new Error(`no status event: ${text.slice(0, 200)}`);
      if (/rtmp:\/\/|"url"/.test(text)) throw new Error(`output details leaked: ${text.slice(0, 400)}`);
      const hostText = await firstStatusEvent(roomId, hostToken);
      if (!hostText.includes('"url"')) throw new Error('the host stream lacks output details');
    });
  }

  // 5b. The host's program controls act on the live mix (layout, spotlight, level in the mix).
  if (guestId) {
    await check('host switches layout, spotlights, mutes the guest and changes the look from the studio', async () => {
      await host.page.selectOption('#layout', 'pip');
      await waitInPage(host.page, 'pip layout', () => window.costream.status?.layout?.type === 'pip');
      await host.page.click(`#people li[data-participant-id="${guestId}"] .spotlight`);
      await waitInPage(
        host.page,
        'guest pinned',
        (id) => window.costream.status?.layout?.pin === id,
        guestId,
      );
      await host.page.click(`#people li[data-participant-id="${guestId}"] .mute-in-program`);
      await waitInPage(
        host.page,
        'guest muted in the mix',
        (id) => window.costream.status?.participants.find((p) => p.participant_id === id)?.audio?.muted === true,
        guestId,
      );
      await host.page.click(`#people li[data-participant-id="${guestId}"] .mute-in-program`);
      await host.page.selectOption('#layout', 'grid');
      await waitInPage(host.page, 'grid layout', () => window.costream.status?.layout?.type === 'grid');
      await host.page.check('#look-labels');
      await host.page.locator('#look-background').evaluate((input) => {
        input.value = '#203040';
        input.dispatchEvent(new Event('change'));
      });
      await waitInPage(
        host.page,
        'labels and background in the look',
        () => window.costream.status?.look?.labels === true && window.costream.status?.look?.background === '#203040',
      );
    });
  }

  // 6. Screenshots of every page while everything runs.
  await check('screenshots', async () => {
    await shoot(host.page, 'host');
    await shoot(guest.page, 'guest');
    await shoot(viewer.page, 'watch');
  });

  // 7. The guest leaves: the studio updates within 5 s, no reload.
  if (guestId) {
    await check('guest leaves and the studio updates within 5 s', async () => {
      await guest.page.click('#leave');
      const started = Date.now();
      await waitInPage(
        host.page,
        'guest gone from the studio',
        (id) =>
          !document.querySelector(`#people li[data-participant-id="${id}"]`) &&
          !document.querySelector(`.tile[data-participant-id="${id}"]`),
        guestId,
        5000,
      );
      metrics.guest_leave_to_studio_update_ms = Date.now() - started;
      await waitInPage(guest.page, 'guest waiting', () => document.body.dataset.state === 'waiting');
    });

    // 8. The guest joins again and the host removes them: the guest page says so.
    await check('host removes a guest; the guest page shows removed', async () => {
      await guest.page.click('#join');
      const again = await waitInPage(
        guest.page,
        'guest back',
        () => document.body.dataset.state === 'live' && window.costream.participantId,
        null,
        20000,
      );
      const button = `#people li[data-participant-id="${again}"] .remove-guest`;
      await host.page.waitForSelector(button, { timeout: 10000 });
      await host.page.click(button);
      await waitInPage(guest.page, 'removed state', () => document.body.dataset.state === 'removed', null, 5000);
      await waitInPage(
        host.page,
        'removed guest gone',
        (id) => !document.querySelector(`#people li[data-participant-id="${id}"]`),
        again,
        5000,
      );
      await shoot(guest.page, 'guest-removed');
    });
  }

  // 8b. A viewer asks to join from the watch page (连麦); the studio accepts; the viewer comes on
  // air with its own token, leaves, and is back to watching.
  await check('a viewer asks from the watch page, the studio accepts, the viewer comes on air', async () => {
    await viewer.page.fill('#apply-name', 'Viewer V');
    await viewer.page.click('#apply-ask');
    await waitInPage(viewer.page, 'request pending', () => document.body.dataset.apply === 'pending');
    const accept = '#requests li[data-request-id] [data-action="accept"]';
    await host.page.waitForSelector(accept, { timeout: 5000 });
    const name = await host.page.textContent('#requests li[data-request-id] .output-name');
    if (name !== 'Viewer V') throw new Error(`the studio shows ${name}`);
    // The page turns into the guest view without a reload: this mark survives it.
    await viewer.page.evaluate(() => {
      window.sameDocument = true;
    });
    const acceptedAt = Date.now();
    await Promise.all([viewer.page.waitForURL(/\/join\//, { timeout: 10000 }), host.page.click(accept)]);
    // On air without another click (camera and mic preview first).
    const onAir = await waitInPage(
      viewer.page,
      'viewer on air',
      () => document.body.dataset.state === 'live' && window.costream.participantId,
      null,
      20000,
    );
    metrics.accept_to_viewer_on_air_ms = Date.now() - acceptedAt;
    if (!(await viewer.page.evaluate(() => window.sameDocument === true))) {
      throw new Error('the watch page reloaded to become the guest view');
    }
    await waitInPage(
      host.page,
      'the viewer in the studio',
      (id) => !!document.querySelector(`#people li[data-participant-id="${id}"]`),
      onAir,
      10000,
    );
    // Visible in the program: the mixer reports it (join → visible in the room status).
    let status = null;
    for (let i = 0; i < 100; i++) {
      status = await (
        await fetch(`${base}/api/v1/rooms/${roomId}`, { headers: { Authorization: `Bearer ${hostToken}` } })
      ).json();
      const seen = status.participants.find((p) => p.participant_id === onAir)?.quality?.join_to_visible_ms;
      if (typeof seen === 'number') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    metrics.accept_to_viewer_in_the_mix_ms = Date.now() - acceptedAt;
    const me = status.participants.find((p) => p.participant_id === onAir);
    if (typeof me?.quality?.join_to_visible_ms !== 'number') throw new Error('the viewer never showed in the mix');
    if (!me?.identity?.startsWith('req-')) throw new Error(`identity ${me?.identity}`);
    // Leave takes it back to watching.
    await Promise.all([viewer.page.waitForURL(/\/watch\//, { timeout: 10000 }), viewer.page.click('#leave')]);
    await waitInPage(viewer.page, 'watching again', () => document.body.dataset.state === 'live', null, 30000);
    return {
      acceptToOnAirMs: metrics.accept_to_viewer_on_air_ms,
      acceptToInTheMixMs: metrics.accept_to_viewer_in_the_mix_ms,
    };
  });

  await check('no token in any URL the pages requested', async () => {
    const leaked = requestedUrls.filter(
      (url) =>
        url.includes(hostToken) ||
        (guestToken && url.includes(guestToken)) ||
        (creationToken && url.includes(creationToken)),
    );
    if (leaked.length) throw new Error(`${leaked.length} request URLs carry a token`);
    return { requests: requestedUrls.length };
  });

  // 9. Stop, then end the room.
  await check('host stops; the viewer page goes offline', async () => {
    await host.page.click('#stop-live');
    await waitInPage(host.page, 'offline', () => document.getElementById('broadcast').textContent === 'offline');
    await waitInPage(viewer.page, 'viewer offline', () => document.body.dataset.state === 'offline', null, 15000);
  });
  await check('host ends the room', async () => {
    host.page.once('dialog', (dialog) => dialog.accept());
    await host.page.click('#end-room');
    await waitInPage(host.page, 'ended banner', () => !document.getElementById('fatal').hidden);
    if ((await http('GET', `/api/v1/rooms/${roomId}`)) !== 404) throw new Error('room still there');
  });
} catch (e) {
  console.log(`scenario aborted: ${e?.stack ?? e}`);
  exitCode = 1;
} finally {
  for (const [name, lines] of Object.entries(consoleLogs)) {
    writeFileSync(join(artifacts, `console-${name}.log`), lines.join('\n') + '\n');
  }
  await browser.close().catch(() => {});
}

console.log(`RESULT ${JSON.stringify({ checks, metrics, screenshots })}`);
process.exit(exitCode);

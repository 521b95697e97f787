// hls.js (npm, pinned in package.json) playing a room's HLS in Chromium, for tests/browser.rs
// (scenario.mjs) and `cargo bench --bench hls` (hls_latency.mjs).

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Turns `page` into a blank page of the server's origin with hls.js loaded (same-origin fetches). */
export async function openHlsPage(page, base) {
  await page.route(`${base}/__hls_check`, (route) =>
    route.fulfill({ contentType: 'text/html', body: '<!doctype html><video id="v" muted playsinline></video>' }),
  );
  await page.goto(`${base}/__hls_check`);
  await page.addScriptTag({ path: join(here, 'node_modules/hls.js/dist/hls.min.js') });
}

/**
 * Plays `url` with hls.js (LL-HLS when `lowLatencyMode`), lets it settle for 4 s, then samples
 * its latency for 5 s: now − the playing frame's EXT-X-PROGRAM-DATE-TIME (which the origin
 * stamps when a segment's first frame reaches it). Returns
 * { startupMs, latencyMs (median), playerLatencyS, targetLatencyS, advancedS, width, fatal }.
 */
export function measureHls(page, url, lowLatencyMode) {
  return page.evaluate(
    async ({ url, lowLatencyMode }) => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const video = document.getElementById('v');
      const hls = new window.Hls({ lowLatencyMode });
      let fatal = null;
      hls.on(window.Hls.Events.ERROR, (_, data) => {
        if (data.fatal) fatal = `${data.type}/${data.details}`;
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      video.play().catch(() => {});
      const started = Date.now();
      while (!(video.currentTime > 0 && hls.playingDate)) {
        if (fatal) throw new Error(`hls.js: ${fatal}`);
        if (Date.now() - started > 30000) throw new Error('hls.js not playing within 30 s');
        await sleep(100);
      }
      const startupMs = Date.now() - started;
      await sleep(4000);
      const before = video.currentTime;
      const samples = [];
      for (let i = 0; i < 11; i += 1) {
        samples.push(Date.now() - hls.playingDate.getTime());
        await sleep(500);
      }
      const result = {
        startupMs,
        latencyMs: samples.sort((a, b) => a - b)[5],
        playerLatencyS: Math.round(hls.latency * 100) / 100,
        targetLatencyS: Math.round((hls.targetLatency ?? 0) * 100) / 100,
        advancedS: Math.round((video.currentTime - before) * 10) / 10,
        width: video.videoWidth,
        fatal,
      };
      hls.destroy();
      return result;
    },
    { url, lowLatencyMode },
  );
}

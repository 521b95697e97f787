// `node hls_latency.mjs <server base URL> <room id> <trials>`: hls.js in Debian's Chromium plays
// the room's HLS `trials` times as LL-HLS and as plain HLS, alternating; the last stdout line is
// `RESULT {"ll": [run…], "plain": [run…]}` (runs as measureHls returns them). Run by
// `cargo bench --bench hls`.

import { chromium } from 'playwright-core';
import { measureHls, openHlsPage } from './hls.mjs';

const [base, roomId, trialsArg] = process.argv.slice(2);
if (!base || !roomId) {
  console.error('usage: node hls_latency.mjs <base url> <room id> [trials]');
  process.exit(2);
}
const trials = Number(trialsArg ?? 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    '--autoplay-policy=no-user-gesture-required',
    '--mute-audio',
  ],
});
const result = { ll: [], plain: [] };
try {
  const page = await browser.newPage();
  await openHlsPage(page, base);
  const url = `${base}/live/${encodeURIComponent(roomId)}/index.m3u8`;
  for (let n = 1; n <= trials; n += 1) {
    for (const [mode, low] of [['ll', true], ['plain', false]]) {
      const run = await measureHls(page, url, low);
      console.error(`trial ${n} ${mode}: ${JSON.stringify(run)}`);
      result[mode].push(run);
    }
  }
} finally {
  await browser.close();
}
console.log(`RESULT ${JSON.stringify(result)}`);

// `/watch/{room}`: the room's mix from the built-in origin (HTTP-FLV through mpegts.js, or
// HLS where the browser has no Media Source Extensions, as on the iPhone).
// Offline until the host goes live; starts by itself, and goes back to waiting when it stops.

import { AskToJoin } from './apply.js';
import { $, api, rememberToken, roomIdFromPath } from './common.js';
import { playLive } from './player.js';

const roomId = roomIdFromPath();
const video = $('player');
/** The player, stopped when this page turns into the guest view. */
let playing = null;

const LABELS = {
  connecting: ['connecting', 'Connecting…', ''],
  live: ['live', '', ''],
  offline: ['offline', 'The stream is offline', 'It starts here by itself when the host goes live.'],
  unsupported: ['unsupported', 'This browser cannot play the stream', 'Try a current Chrome, Edge, Firefox or Safari.'],
};

function show(state) {
  const [badgeText, title, detail] = LABELS[state];
  const badge = $('watch-state');
  badge.textContent = badgeText;
  badge.className = `badge badge-${state === 'live' ? 'live' : 'offline'}`;
  document.body.dataset.state = state;
  $('offline').hidden = state === 'live';
  $('offline-title').textContent = title;
  $('offline-detail').textContent = detail;
  $('unmute').hidden = !(state === 'live' && video.muted);
}

$('unmute').addEventListener('click', () => {
  video.muted = false;
  video.play().catch(() => {});
  $('unmute').hidden = true;
});

/**
 * Accepted: this page turns into the guest view, without a reload, with the personal token
 * (kept for this tab, never in a URL). The guest view's markup is the join page's own (one
 * source of truth), fetched and swapped in; its module then runs here as it would there, and
 * goes on air at once. Leaving it comes back to watching. Should the swap fail, the join page
 * is opened instead.
 */
async function comeOnAir(accepted) {
  rememberToken(roomId, 'guest', accepted.token);
  const guestView = `/join/${encodeURIComponent(roomId)}?from=watch`;
  try {
    const response = await fetch(guestView);
    if (!response.ok) throw new Error(`guest view: ${response.status}`);
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    playing?.stop();
    // Scripts in parsed markup never run: the guest view's module is imported below.
    document.body.replaceChildren(...[...page.body.childNodes].map((n) => document.adoptNode(n)));
    document.body.className = page.body.className;
    delete document.body.dataset.apply;
    document.title = page.title;
    history.pushState(null, '', guestView);
    await import('./join.js');
  } catch (e) {
    console.warn(`cannot turn into the guest view in place (${e.message}); opening it`);
    location.assign(guestView);
  }
}

async function main() {
  const apply = new AskToJoin({ roomId, onAccepted: comeOnAir });
  try {
    const room = await api(`/api/v1/rooms/${encodeURIComponent(roomId)}`);
    $('room-name').textContent = room.name || 'Live';
    document.title = `costream · ${room.name || 'watch'}`;
    apply.update(room);
  } catch (e) {
    if (e.status === 404) {
      $('offline-title').textContent = 'No such stream';
      $('offline-detail').textContent = 'The room has ended or the link is wrong.';
      document.body.dataset.state = 'not_found';
      return;
    }
  }
  playing = playLive(video, roomId, show);
  document.body.dataset.player = playing.kind ?? 'none';
}

main();

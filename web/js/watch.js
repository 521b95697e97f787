// `/watch/{room}`: the room's mix from the built-in origin (HTTP-FLV through mpegts.js).
// Offline until the host goes live; starts by itself, and goes back to waiting when it stops.

import { AskToJoin } from './apply.js';
import { $, api, rememberToken, roomIdFromPath } from './common.js';
import { playFlv } from './player.js';

const roomId = roomIdFromPath();
const video = $('player');

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

/** Accepted: on to the guest view with the personal token (kept for this tab, not in history). */
function comeOnAir(accepted) {
  rememberToken(roomId, 'guest', accepted.token);
  location.assign(`/join/${encodeURIComponent(roomId)}?from=watch`);
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
  playFlv(video, `/live/${encodeURIComponent(roomId)}.flv`, show);
}

main();

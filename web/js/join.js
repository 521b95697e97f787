// `/join/{room}#token=GUEST_TOKEN`: a guest checks camera and mic, joins, and then sees and
// hears the host and the other guests in real time (one WHEP subscription per participant).

import { $, followRoom, roomIdFromPath, sleep, takeToken } from './common.js';
import { LocalMedia, wireMediaToggles } from './devices.js';
import { publish, Subscriptions } from './rtc.js';
import { RemoteTiles } from './tiles.js';

const roomId = roomIdFromPath();
const token = takeToken(roomId, 'guest');

/** phase: 'waiting' | 'joining' | 'joined' | 'removed' | 'ended' */
const state = {
  phase: 'waiting',
  publisher: null,
  status: null,
  serverReachable: true,
  mediaLost: false,
  mediaReady: false,
  error: null,
};

const media = new LocalMedia({
  preview: $('preview'),
  cameraSelect: $('camera'),
  micSelect: $('mic'),
  video: { width: 640, height: 360, frameRate: 30 },
});
const tiles = new RemoteTiles($('tiles'), $('unmute-remote'));
const subscriptions = new Subscriptions({
  roomId,
  token,
  selfId: () => state.publisher?.participantId,
  added: (participant, subscription) => tiles.add(participant, subscription.stream),
  removed: (participantId) => tiles.remove(participantId),
  failed: (participant, error) =>
    console.warn(`cannot receive ${participant.participant_id}: ${error.message}`),
});

window.costream = {
  role: 'guest',
  get participantId() {
    return state.publisher?.participantId ?? null;
  },
  get publisher() {
    return state.publisher?.pc ?? null;
  },
  subscriptions: () => subscriptions.connections(),
  get state() {
    return shownState();
  },
  get status() {
    return state.status;
  },
};

/** The state the banner shows, from the most to the least important. */
function shownState() {
  if (state.phase === 'removed') return 'removed';
  if (state.phase === 'ended') return 'ended';
  if (state.phase === 'joined' && (!state.serverReachable || state.mediaLost)) return 'reconnecting';
  if (state.phase === 'joined') return state.status?.broadcast === 'live' ? 'live' : 'joined';
  if (state.phase === 'joining') return 'joining';
  return 'waiting';
}

const BANNERS = {
  waiting: ['Ready when you are', 'Check your camera and microphone, then join.'],
  joining: ['Joining…', 'Connecting your camera and microphone to the room.'],
  joined: ['You are in the room', 'The host and the other guests see and hear you. The show is not live yet.'],
  live: ['You are live', 'Viewers see and hear you now.'],
  reconnecting: ['Reconnecting…', 'The connection dropped; trying again.'],
  removed: ['You were removed', 'The host removed you from this room.'],
  ended: ['The room has ended', 'Thanks for joining. You can close this page.'],
};

function update() {
  const shown = shownState();
  const banner = $('state-banner');
  const [title, detail] = BANNERS[shown];
  banner.dataset.state = shown;
  banner.className = `banner banner-${shown}`;
  $('state-title').textContent = title;
  $('state-detail').textContent = state.error && shown === 'waiting' ? state.error : detail;
  document.body.dataset.state = shown;
  const inRoom = state.phase === 'joined' || state.phase === 'joining';
  const over = state.phase === 'removed' || state.phase === 'ended';
  $('join').hidden = inRoom || over;
  $('join').disabled = !state.mediaReady || over;
  $('leave').hidden = !inRoom;
  $('display-name').disabled = inRoom || over;
  if (state.status) {
    const badge = $('broadcast');
    badge.textContent = state.status.broadcast;
    badge.className = `badge badge-${state.status.broadcast}`;
    $('room-name').textContent = state.status.name || 'Room';
    document.title = `costream · ${state.status.name || 'join'}`;
  }
}

async function join() {
  state.phase = 'joining';
  state.error = null;
  update();
  let delay = 1000;
  while (state.phase === 'joining' || state.phase === 'joined') {
    try {
      const name = $('display-name').value.trim() || 'Guest';
      const publisher = await publish(roomId, token, media.stream, name);
      if (state.phase !== 'joining' && state.phase !== 'joined') {
        publisher.leave();
        return;
      }
      state.publisher = publisher;
      state.phase = 'joined';
      state.mediaLost = false;
      media.attach(publisher.senders);
      subscriptions.enable();
      update();
      delay = 1000;
      await connectionLost(publisher.pc);
      if (state.publisher !== publisher) return;
      // Removed or ended rooms close the connection too; their notices come first, but give
      // them a moment before reconnecting.
      state.mediaLost = true;
      update();
      await sleep(1000);
      if (state.phase !== 'joined') return;
      media.detach();
      publisher.leave();
      state.publisher = null;
    } catch (e) {
      if (e.status === 404 || e.status === 410) {
        enterFinal('ended');
        return;
      }
      if (e.status === 409 && e.code === 'room_full') {
        state.phase = 'waiting';
        state.error = e.message;
        update();
        return;
      }
      if (state.phase === 'joining') {
        state.phase = 'waiting';
        state.error = `Could not join: ${e.message}`;
        update();
        return;
      }
      state.mediaLost = true;
      update();
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 10000);
  }
}

function connectionLost(pc) {
  return new Promise((resolve) => {
    let timer = null;
    pc.addEventListener('connectionstatechange', () => {
      const s = pc.connectionState;
      if (s === 'failed' || s === 'closed') resolve(s);
      if (s === 'disconnected' && !timer) timer = setTimeout(() => resolve(s), 8000);
      if (s === 'connected' && timer) {
        clearTimeout(timer);
        timer = null;
      }
    });
  });
}

async function leave() {
  const publisher = state.publisher;
  state.publisher = null;
  state.phase = 'waiting';
  subscriptions.closeAll();
  tiles.clear();
  media.detach();
  update();
  await publisher?.leave();
}

/** Removed or ended: drop every connection, keep the page as a message. */
function enterFinal(phase) {
  if (state.phase === 'removed' || state.phase === 'ended') return;
  state.phase = phase;
  const publisher = state.publisher;
  state.publisher = null;
  publisher?.pc.close();
  subscriptions.closeAll();
  tiles.clear();
  media.detach();
  update();
}

function wireControls() {
  $('join').addEventListener('click', join);
  $('leave').addEventListener('click', leave);
  wireMediaToggles(media, $('toggle-camera'), $('toggle-mic'));
  // Leaving the page leaves the room at once instead of after a connection timeout.
  window.addEventListener('pagehide', () => {
    if (state.publisher) {
      fetch(state.publisher.location, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}` },
        keepalive: true,
      });
    }
  });
}

async function main() {
  if (!roomId || !token) {
    state.error = 'This invite link is incomplete. Ask the host for the link again.';
    update();
    return;
  }
  wireControls();
  update();
  followRoom(roomId, token, {
    status: (status) => {
      state.status = status;
      state.serverReachable = true;
      subscriptions.sync(status.participants);
      tiles.update(status.participants);
      update();
    },
    removed: (notice) => {
      if (notice.participant_id === state.publisher?.participantId) enterFinal('removed');
    },
    ended: () => enterFinal('ended'),
    fatal: (e) => {
      if (e.status === 404) enterFinal('ended');
      else {
        state.error = e.status === 401 ? 'This invite link is not valid for this room.' : e.message;
        update();
      }
    },
    reconnecting: () => {
      state.serverReachable = false;
      update();
    },
    connected: () => {
      state.serverReachable = true;
      update();
    },
  });
  try {
    await media.start();
    state.mediaReady = true;
  } catch (e) {
    state.error = e.message;
  }
  update();
}

main();

// `/join/{room}#token=GUEST_TOKEN`: a guest checks camera and mic, joins, and then sees and
// hears the host and the other guests in real time (one WHEP subscription per participant).

import { $, followRoom, roomIdFromPath, takeToken } from './common.js';
import { LocalMedia, wireMediaToggles } from './devices.js';
import { Subscriptions } from './rtc.js';
import { PublishSession } from './session.js';
import { RemoteTiles } from './tiles.js';

const roomId = roomIdFromPath();
const token = takeToken(roomId, 'guest');
/** Came from the watch page, where the host accepted this viewer's request to join: it goes on
 * air without another click, and leaving takes it back to watching. */
const fromWatch = new URLSearchParams(location.search).get('from') === 'watch';

/** phase: 'waiting' | 'joining' | 'joined' | 'refused' | 'removed' | 'ended' */
const state = {
  phase: 'waiting',
  publisher: null,
  status: null,
  serverReachable: true,
  mediaReady: false,
  error: null,
  /** When the event stream dropped; the first status after it comes back is checked for us. */
  streamDroppedAt: null,
  /** Our participant id in the room, kept while reconnecting. */
  lastParticipantId: null,
  /** Every state the banner showed, with its time (diagnostics; the restart test reads it). */
  history: [],
};
/** Publishes the camera and mic while joined, and again after a lost session. */
let session = null;

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
  get history() {
    return state.history;
  },
};

/** The state the banner shows, from the most to the least important. */
function shownState() {
  if (state.phase === 'removed') return 'removed';
  if (state.phase === 'ended') return 'ended';
  if (state.phase === 'refused') return 'refused';
  if (state.phase === 'joined' && (!state.serverReachable || session?.state !== 'connected')) {
    return 'reconnecting';
  }
  if (state.phase === 'joined') return state.status?.broadcast === 'live' ? 'live' : 'joined';
  if (state.phase === 'joining') return 'joining';
  return 'waiting';
}

const BANNERS = {
  waiting: ['Ready when you are', 'Check your camera and microphone, then join.'],
  joining: ['Joining…', 'Connecting your camera and microphone to the room.'],
  joined: ['You are in the room', 'The host and the other guests see and hear you. The show is not live yet.'],
  live: ['You are live', 'Viewers see and hear you now.'],
  reconnecting: ['Reconnecting…', 'The connection dropped; trying again. Your camera and mic stay on.'],
  refused: ['Cannot rejoin', 'The server no longer accepts this invite link. Ask the host for a new one.'],
  removed: ['You were removed', 'The host removed you from this room.'],
  ended: ['The room has ended', 'Thanks for joining. You can close this page.'],
};

function update() {
  const shown = shownState();
  if (state.history.at(-1)?.state !== shown) state.history.push({ state: shown, at: Date.now() });
  const banner = $('state-banner');
  const [title, detail] = BANNERS[shown];
  banner.dataset.state = shown;
  banner.className = `banner banner-${shown}`;
  $('state-title').textContent = title;
  $('state-detail').textContent =
    state.error && (shown === 'waiting' || shown === 'refused') ? state.error : detail;
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
  const mine = new PublishSession({
    roomId,
    token,
    stream: () => media.stream,
    displayName: () => $('display-name').value.trim() || 'Guest',
    // A first join that fails goes back to the join button; only a lost session retries.
    retryFirst: false,
    changed: (s) => {
      if (session !== mine) return;
      if (s === 'refused' && state.phase === 'joined') refused(mine.error);
      update();
    },
    published: (publisher) => {
      state.publisher = publisher;
      state.lastParticipantId = publisher.participantId;
      media.attach(publisher.senders);
      subscriptions.enable();
      update();
    },
    lost: () => {
      // The others' subscriptions were on the same server session: open them anew with ours.
      state.publisher = null;
      media.detach();
      subscriptions.closeAll();
      update();
    },
  });
  session = mine;
  try {
    await mine.start();
  } catch (e) {
    if (session !== mine) return;
    session = null;
    if (e.status === 404 || e.status === 410) {
      enterFinal('ended');
      return;
    }
    state.phase = 'waiting';
    state.error = e.status === 409 && e.code === 'room_full' ? e.message : `Could not join: ${e.message}`;
    update();
    return;
  }
  if (session === mine && state.phase === 'joining') state.phase = 'joined';
  update();
}

/** The server refused to take us back (token, room or person gone): stop, say why. */
function refused(error) {
  if (error?.status === 404 || error?.status === 410) {
    enterFinal('ended');
    return;
  }
  if (error?.status === 403 && error?.code === 'removed') {
    enterFinal('removed');
    return;
  }
  enterFinal('refused');
  state.error = `Cannot rejoin: ${error?.message ?? 'the server refused this link'}`;
  update();
}

async function leave() {
  const leaving = session;
  session = null;
  state.publisher = null;
  state.phase = 'waiting';
  subscriptions.closeAll();
  tiles.clear();
  media.detach();
  update();
  await leaving?.stop();
  if (fromWatch) location.assign(`/watch/${encodeURIComponent(roomId)}`);
}

/** Removed, ended or refused: drop every connection, keep the page as a message. */
function enterFinal(phase) {
  if (['removed', 'ended', 'refused'].includes(state.phase)) return;
  state.phase = phase;
  const ending = session;
  session = null;
  state.publisher = null;
  ending?.abandon();
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
      if (state.streamDroppedAt !== null) {
        session?.absentFrom(status, state.streamDroppedAt);
        state.streamDroppedAt = null;
      }
      subscriptions.sync(status.participants);
      tiles.update(status.participants);
      update();
    },
    removed: (notice) => {
      // Also while reconnecting: the removal closed the session we were in.
      if (notice.participant_id === state.lastParticipantId) enterFinal('removed');
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
      state.streamDroppedAt ??= Date.now();
      update();
    },
    // Reachable again once the first status arrives (and shows whether we are still in).
  });
  try {
    await media.start();
    state.mediaReady = true;
  } catch (e) {
    state.error = e.message;
  }
  update();
  if (fromWatch && state.mediaReady) join();
}

main();

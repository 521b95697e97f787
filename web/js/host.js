// `/host/{room}`: the studio. Publishes the host's camera and microphone over WHIP, shows and
// plays every guest (one WHEP subscription each), runs the broadcast, shows its health.

import {
  $, api, copyText, el, followRoom, formatBitrate, formatDuration, roomIdFromPath, takeToken,
  toast,
} from './common.js';
import { LocalMedia, wireMediaToggles } from './devices.js';
import { playLive } from './player.js';
import { ProgramControls } from './program.js';
import { renderQuality } from './quality.js';
import { RecordingsPanel } from './recordings.js';
import { JoinRequestsPanel } from './requests.js';
import { Subscriptions } from './rtc.js';
import { PublishSession } from './session.js';
import { displayName, RemoteTiles } from './tiles.js';

const roomId = roomIdFromPath();
const token = takeToken(roomId, 'host');
const state = {
  publisher: null,
  status: null,
  ended: false,
  program: null,
  serverReachable: true,
  /** When the event stream dropped; the first status after it comes back is checked for us. */
  streamDroppedAt: null,
  /** Every publish state shown, with its time (diagnostics; the restart test reads it). */
  history: [],
};
/** Publishes the camera and mic, and again after a lost session. */
let session = null;

const media = new LocalMedia({
  preview: $('preview'),
  cameraSelect: $('camera'),
  micSelect: $('mic'),
  video: { width: 1280, height: 720, frameRate: 30 },
});
const tiles = new RemoteTiles($('tiles'), $('unmute-remote'));
const joinRequests = new JoinRequestsPanel({ roomId, token });
const recordings = new RecordingsPanel({ roomId, token });
const program = new ProgramControls({
  roomId,
  token,
  render: (status) => render(status),
  layoutSelect: $('layout'),
  addOutputForm: $('add-output'),
  look: {
    labels: $('look-labels'),
    background: $('look-background'),
    logo: $('look-logo'),
    clearLogo: $('look-clear-logo'),
  },
});
const subscriptions = new Subscriptions({
  roomId,
  token,
  selfId: () => state.publisher?.participantId,
  added: (participant, subscription) => {
    tiles.add(participant, subscription.stream);
    renderPeople();
  },
  removed: (participantId) => {
    tiles.remove(participantId);
    renderPeople();
  },
  failed: (participant, error) => {
    console.warn(`cannot receive ${participant.participant_id}: ${error.message}`);
  },
});

// For diagnostics (and the browser tests): the live connections of this page.
window.costream = {
  role: 'host',
  get participantId() {
    return state.publisher?.participantId ?? null;
  },
  get publisher() {
    return state.publisher?.pc ?? null;
  },
  subscriptions: () => subscriptions.connections(),
  get status() {
    return state.status;
  },
  get history() {
    return state.history;
  },
};

function fatal(message) {
  const banner = $('fatal');
  banner.textContent = message;
  banner.hidden = false;
  for (const id of ['go-live', 'stop-live', 'end-room']) $(id).disabled = true;
}

/** The pill on the self view; `shown` (data-state) is one of connecting, connected,
 * reconnecting, refused, ended, or absent before publishing starts. */
function setPublishState(text, kind = '', shown = '') {
  const pill = $('publish-state');
  pill.textContent = text;
  pill.className = `pill ${kind}`;
  pill.dataset.state = shown;
  if (shown && state.history.at(-1)?.state !== shown) state.history.push({ state: shown, at: Date.now() });
}

function showPublishState() {
  if (state.ended || !session) return;
  const error = session.error?.message;
  switch (session.state) {
    case 'connected':
      if (state.serverReachable) setPublishState('connected', 'ok', 'connected');
      else setPublishState('reconnecting to the server…', 'warn', 'reconnecting');
      break;
    case 'reconnecting':
      setPublishState(error ? `reconnecting (${error})…` : 'reconnecting…', 'warn', 'reconnecting');
      break;
    case 'connecting':
      if (error) setPublishState(`cannot publish: ${error}; retrying`, 'error', 'connecting');
      else setPublishState('connecting…', '', 'connecting');
      break;
    case 'refused':
      setPublishState(`cannot publish: ${error}`, 'error', 'refused');
      break;
    default:
      break;
  }
}

function startPublishing() {
  const mine = new PublishSession({
    roomId,
    token,
    stream: () => media.stream,
    displayName: () => 'Host',
    changed: (s) => {
      if (session !== mine) return;
      if (s === 'refused') hostRefused(mine.error);
      showPublishState();
    },
    published: (publisher) => {
      state.publisher = publisher;
      media.attach(publisher.senders);
      subscriptions.enable();
      showPublishState();
    },
    lost: () => {
      // The guests' subscriptions were on the same server session: open them anew with ours.
      state.publisher = null;
      media.detach();
      subscriptions.closeAll();
    },
  });
  session = mine;
  mine.start();
}

/** The server refused to take the host back: the room ended, or the token is no good. */
function hostRefused(error) {
  if (error?.status === 404 || error?.status === 410) roomEnded();
  else fatal(`The server no longer accepts this studio link: ${error?.message ?? 'refused'}`);
}

function outputName(output) {
  if (output.origin) return 'Viewer page (built-in)';
  return output.url ?? output.output_id;
}

function render(status) {
  state.status = status;
  document.title = `costream · ${status.name || 'studio'}`;
  $('room-name').textContent = status.name || 'Studio';
  const badge = $('broadcast');
  badge.textContent = status.broadcast;
  badge.className = `badge badge-${status.broadcast}`;
  const live = status.broadcast === 'live';
  $('go-live').hidden = live;
  $('go-live').disabled = state.ended;
  $('stop-live').hidden = !live;
  $('end-room').disabled = state.ended;
  $('live-clock').hidden = !live;
  $('live-clock').textContent = formatDuration(status.live_seconds);
  $('duration').textContent = live ? formatDuration(status.live_seconds) : '–';
  const mixer = status.mixer;
  $('mixer-state').textContent =
    mixer.state +
    (mixer.restarts ? ` · ${mixer.restarts} restart${mixer.restarts > 1 ? 's' : ''}` : '') +
    (mixer.reason ? ` · ${mixer.reason}` : '');

  $('outputs').replaceChildren(
    ...status.outputs.map((o) =>
      el(
        'li',
        { 'data-output-id': o.output_id },
        el(
          'div',
          { class: 'output-head' },
          el('span', { class: 'output-name', text: outputName(o), title: o.url ?? '' }),
          el('span', { class: `state state-${o.state}`, text: o.state }),
        ),
        el(
          'div',
          { class: 'output-stats' },
          el('span', { class: 'bitrate', text: live ? formatBitrate(o.bitrate_kbps) : '–' }),
          el('span', { text: ' · live for ' }),
          el('span', { class: 'output-duration', text: formatDuration(o.live_seconds) }),
          el('span', { text: ' · ' }),
          el('span', { class: 'reconnects', text: String(o.reconnects ?? 0) }),
          el('span', { text: o.reconnects === 1 ? ' reconnect' : ' reconnects' }),
        ),
        o.reason ? el('div', { class: 'output-reason small', text: o.reason }) : null,
        program.removeOutputButton(o),
      ),
    ),
  );
  program.update(status);
  subscriptions.sync(status.participants);
  tiles.update(status.participants);
  renderPeople();
  renderProgram(status);
  renderQuality(status);
  joinRequests.update(status);
  recordings.update(status);
}

function renderPeople() {
  const status = state.status;
  if (!status) return;
  // The status arrives every second while live; rebuild the list (and its controls, which may be
  // in use) only when something it shows changed.
  const shown = JSON.stringify([
    status.participants.map((p) => [p.participant_id, p.display_name, p.role, p.tracks.length, p.subscribers, p.audio]),
    [...tiles.tiles.keys()],
    state.publisher?.participantId,
    status.layout,
  ]);
  if (shown === state.peopleShown) return;
  state.peopleShown = shown;
  const guests = status.participants.filter((p) => p.role === 'guest');
  $('no-guests').hidden = guests.length > 0;
  $('people').replaceChildren(
    ...status.participants.map((p) => {
      const self = p.participant_id === state.publisher?.participantId;
      const receiving = tiles.tiles.has(p.participant_id);
      let detail = self
        ? 'you'
        : p.tracks.length === 0
          ? 'connecting…'
          : receiving
            ? 'in the room'
            : 'connecting media…';
      // How many others receive this participant (the SFU's subscriptions), when known.
      if (typeof p.subscribers === 'number' && p.tracks.length > 0) {
        detail += ` · seen by ${p.subscribers}`;
      }
      return el(
        'li',
        { 'data-participant-id': p.participant_id, 'data-role': p.role },
        el('span', { class: 'person-name', text: displayName(p) }),
        el('span', { class: 'muted small', text: ` ${detail}` }),
        program.participantControls(p),
        p.role === 'guest'
          ? el('button', {
              class: 'btn btn-ghost btn-small remove-guest',
              text: 'Remove',
              onclick: () => removeGuest(p),
            })
          : null,
      );
    }),
  );
}

async function removeGuest(participant) {
  try {
    await api(
      `/api/v1/rooms/${encodeURIComponent(roomId)}/participants/${encodeURIComponent(participant.participant_id)}`,
      { method: 'DELETE', token },
    );
    toast(`${displayName(participant)} was removed`);
  } catch (e) {
    toast(e.message, 'error');
  }
}

function renderProgram(status) {
  const card = $('program-card');
  const usesOrigin = Boolean(status.origin);
  const live = status.broadcast === 'live';
  $('program').hidden = !usesOrigin;
  if (!usesOrigin) {
    $('program-state').textContent = 'preview only for rooms on the built-in viewer page';
    return;
  }
  card.dataset.viewers = status.origin.viewers;
  if (live && !state.program) {
    state.program = playLive($('program'), roomId, (s) => {
      const label = { connecting: 'connecting…', live: 'live', offline: 'waiting for the mix…', unsupported: 'this browser cannot play the preview' }[s];
      $('program-state').textContent = label ?? s;
      $('program-state').dataset.state = s;
    });
  } else if (!live && state.program) {
    state.program.stop();
    state.program = null;
    $('program-state').textContent = 'offline';
    $('program-state').dataset.state = 'offline';
  }
}

function roomEnded() {
  if (state.ended) return;
  state.ended = true;
  fatal('This room has ended. Start a new one from the home page.');
  subscriptions.closeAll();
  tiles.clear();
  media.detach();
  session?.abandon();
  session = null;
  state.publisher = null;
  state.program?.stop();
  state.program = null;
  setPublishState('room ended', '', 'ended');
}

async function runCommand(button, method, path) {
  button.disabled = true;
  try {
    const status = await api(path, { method, token });
    if (status) render(status);
  } catch (e) {
    toast(e.message, 'error');
  } finally {
    button.disabled = state.ended;
  }
}

function wireControls() {
  const base = `/api/v1/rooms/${encodeURIComponent(roomId)}`;
  $('go-live').addEventListener('click', () => runCommand($('go-live'), 'POST', `${base}/live`));
  $('stop-live').addEventListener('click', () =>
    runCommand($('stop-live'), 'DELETE', `${base}/live`),
  );
  $('end-room').addEventListener('click', async () => {
    if (!confirm('End the room for everyone? Guests are disconnected and the broadcast stops.')) return;
    try {
      await api(base, { method: 'DELETE', token });
      roomEnded();
    } catch (e) {
      toast(e.message, 'error');
    }
  });
  wireMediaToggles(media, $('toggle-camera'), $('toggle-mic'));
  // Leaving the page leaves the room at once instead of after a connection timeout.
  window.addEventListener('pagehide', () => {
    if (state.publisher && !state.ended) {
      fetch(state.publisher.location, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}` },
        keepalive: true,
      });
    }
  });
  $('copy-invite').addEventListener('click', async () => {
    if (await copyText($('invite-link').value, $('invite-link'))) toast('Invite link copied');
  });
  $('revoke-invite').addEventListener('click', revokeSharedLink);
  $('make-personal').addEventListener('click', makePersonalInvite);
  $('copy-personal').addEventListener('click', async () => {
    if (await copyText($('personal-link').value, $('personal-link'))) toast('Personal invite copied');
  });
  $('copy-watch').addEventListener('click', async () => {
    if (await copyText($('watch-link').value, $('watch-link'))) toast('Viewer link copied');
  });
}

// The server's public URL may differ from how this page was reached (proxies); links made
// from this page's origin always work for people reaching it the same way.
function hereUrl(url) {
  const parsed = new URL(url);
  return new URL(parsed.pathname + parsed.hash, location.origin).href;
}

function showSharedLink(links) {
  const revoked = links.guest_link_revoked || !links.guest_url;
  $('invite-link').value = revoked ? 'revoked — use personal invites' : hereUrl(links.guest_url);
  $('copy-invite').disabled = revoked;
  $('revoke-invite').disabled = revoked;
}

async function revokeSharedLink() {
  if (!confirm('Revoke the shared invite link? Guests inside stay; nobody new can join with it.')) return;
  try {
    showSharedLink(await api(`/api/v1/rooms/${encodeURIComponent(roomId)}/links/guest`, { method: 'DELETE', token }));
    toast('Shared invite link revoked');
  } catch (e) {
    toast(e.message, 'error');
  }
}

async function makePersonalInvite() {
  const name = $('personal-name').value.trim();
  try {
    const invite = await api(`/api/v1/rooms/${encodeURIComponent(roomId)}/invites`, {
      method: 'POST',
      token,
      body: name ? { name } : {},
    });
    $('personal-link').value = hereUrl(invite.join_url);
    $('personal-row').hidden = false;
    toast(`Personal invite for ${invite.name ?? invite.identity} ready`);
  } catch (e) {
    toast(e.message, 'error');
  }
}

async function main() {
  if (!roomId || !token) {
    fatal('This studio link has no host token. Open the link you got when you created the room.');
    return;
  }
  wireControls();
  let links;
  try {
    links = await api(`/api/v1/rooms/${encodeURIComponent(roomId)}/links`, { token });
  } catch (e) {
    if (e.status === 404) fatal('This room does not exist or has ended. Start a new one from the home page.');
    else if (e.status === 401 || e.status === 403) fatal('This link is not the host link of this room.');
    else fatal(e.message);
    return;
  }
  showSharedLink(links);
  $('watch-link').value = new URL(new URL(links.watch_url).pathname, location.origin).href;

  followRoom(roomId, token, {
    status: (status) => {
      state.serverReachable = true;
      if (state.streamDroppedAt !== null) {
        session?.absentFrom(status, state.streamDroppedAt);
        state.streamDroppedAt = null;
      }
      render(status);
      showPublishState();
    },
    ended: roomEnded,
    // A viewer asked (or a request closed): the status would tell only at its next change.
    joinRequests: () => joinRequests.refresh(),
    fatal: (e) => (e.status === 404 ? roomEnded() : fatal(e.message)),
    reconnecting: () => {
      state.serverReachable = false;
      state.streamDroppedAt ??= Date.now();
      showPublishState();
    },
    // Reachable again once the first status arrives (and shows whether we are still in).
  });

  try {
    await media.start();
  } catch (e) {
    setPublishState(e.message, 'error');
    return;
  }
  startPublishing();
}

main();

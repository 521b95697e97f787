// WebRTC with the server: publish over WHIP, receive the others over WHEP. Both are
// non-trickle: the offer goes out once ICE gathering is complete, the answer carries all of the
// server's candidates.

import { ApiError, sleep } from './common.js';

/** Local candidates are ready to send. Host candidates on a LAN take milliseconds; give up
 * waiting after a few seconds and send what there is (still enough on most networks). */
function gatheringComplete(pc, timeoutMs = 4000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** POSTs the complete offer; returns the Location (absolute path) of the new resource. */
async function exchange(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc);
  let response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
  } catch (_) {
    throw new ApiError(0, 'network', 'cannot reach the server; check your connection');
  }
  const text = await response.text();
  if (response.status !== 201) {
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (_) {
      json = null;
    }
    throw new ApiError(
      response.status,
      json?.error ?? 'http_error',
      json?.message ?? `the server answered ${response.status}`,
    );
  }
  const location = new URL(response.headers.get('Location'), window.location.href).pathname;
  await pc.setRemoteDescription({ type: 'answer', sdp: text });
  return location;
}

async function deleteResource(location, token) {
  try {
    await fetch(location, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
  } catch (_) {
    // Leaving while offline: the server notices the connection closing anyway.
  }
}

/**
 * Publishes `stream` (one audio and one video track, either may be missing) to the room.
 * Returns { pc, senders: {audio, video}, participantId, leave() }. Tracks are swapped later
 * with senders[kind].replaceTrack(track): no renegotiation.
 */
export async function publish(roomId, token, stream, displayName) {
  const pc = new RTCPeerConnection();
  const senders = {};
  for (const kind of ['audio', 'video']) {
    const track = stream.getTracks().find((t) => t.kind === kind);
    const transceiver = pc.addTransceiver(track ?? kind, {
      direction: 'sendonly',
      streams: [stream],
    });
    senders[kind] = transceiver.sender;
  }
  const query = displayName ? `?name=${encodeURIComponent(displayName)}` : '';
  let location;
  try {
    location = await exchange(pc, `/whip/${encodeURIComponent(roomId)}${query}`, token);
  } catch (e) {
    pc.close();
    throw e;
  }
  const participantId = decodeURIComponent(location.split('/').pop());
  return {
    pc,
    senders,
    participantId,
    location,
    async leave() {
      pc.close();
      await deleteResource(location, token);
    },
  };
}

/**
 * Receives one remote participant's audio and video (WHEP). Returns { pc, stream, close() }.
 */
export async function subscribe(roomId, participantId, token) {
  const pc = new RTCPeerConnection();
  const stream = new MediaStream();
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addEventListener('track', (event) => {
    if (!stream.getTracks().includes(event.track)) stream.addTrack(event.track);
  });
  let location;
  try {
    location = await exchange(
      pc,
      `/whep/${encodeURIComponent(roomId)}/${encodeURIComponent(participantId)}`,
      token,
    );
  } catch (e) {
    pc.close();
    throw e;
  }
  return {
    pc,
    stream,
    location,
    async close() {
      pc.close();
      await deleteResource(location, token);
    },
  };
}

/**
 * Keeps one subscription per remote participant in step with the room status: opens one when
 * a participant (with tracks) appears, closes it when they leave, retries failed ones.
 * Callbacks: added(participant, subscription), removed(participantId), failed(participant, error).
 */
export class Subscriptions {
  constructor({ roomId, token, selfId, added, removed, failed }) {
    Object.assign(this, { roomId, token, selfId, added, removed, failed });
    /** participantId → { subscription?, pending, retryAt } */
    this.entries = new Map();
    // Off until the page publishes: before that, it cannot tell its own participant from others.
    this.enabled = false;
    this.lastParticipants = [];
  }

  /** Reconciles with the participants of a status snapshot. */
  sync(participants) {
    this.lastParticipants = participants;
    if (!this.enabled) return;
    const self = this.selfId();
    const wanted = new Map(
      participants
        .filter((p) => p.participant_id !== self && p.tracks.length > 0)
        .map((p) => [p.participant_id, p]),
    );
    for (const [id, entry] of this.entries) {
      if (!wanted.has(id)) this.drop(id, entry);
    }
    const now = Date.now();
    for (const [id, participant] of wanted) {
      const entry = this.entries.get(id);
      if (entry && (entry.pending || entry.subscription || entry.retryAt > now)) continue;
      this.open(participant);
    }
  }

  open(participant) {
    const id = participant.participant_id;
    const entry = { pending: true, subscription: null, retryAt: 0, attempts: 0 };
    const previous = this.entries.get(id);
    if (previous) entry.attempts = previous.attempts;
    this.entries.set(id, entry);
    subscribe(this.roomId, id, this.token).then(
      (subscription) => {
        entry.pending = false;
        if (this.entries.get(id) !== entry || !this.enabled) {
          subscription.close();
          return;
        }
        entry.subscription = subscription;
        entry.attempts = 0;
        subscription.pc.addEventListener('connectionstatechange', () => {
          if (subscription.pc.connectionState === 'failed' && this.entries.get(id) === entry) {
            // Resubscribe on the next snapshot.
            this.drop(id, entry);
          }
        });
        this.added?.(participant, subscription);
      },
      (error) => {
        entry.pending = false;
        entry.attempts += 1;
        entry.retryAt = Date.now() + Math.min(1000 * 2 ** entry.attempts, 15000);
        this.failed?.(participant, error);
        // Try again once the backoff passes, even if no new snapshot arrives.
        sleep(entry.retryAt - Date.now() + 50).then(() => this.sync(this.lastParticipants));
      },
    );
  }

  drop(id, entry) {
    this.entries.delete(id);
    entry.subscription?.close();
    if (entry.subscription) this.removed?.(id);
  }

  /** Closes everything and stops subscribing until enable(). */
  closeAll() {
    this.enabled = false;
    for (const [id, entry] of [...this.entries]) this.drop(id, entry);
  }

  enable() {
    this.enabled = true;
    this.sync(this.lastParticipants);
  }

  /** participantId → RTCPeerConnection of the open subscriptions (for stats). */
  connections() {
    const result = {};
    for (const [id, entry] of this.entries) {
      if (entry.subscription) result[id] = entry.subscription.pc;
    }
    return result;
  }
}

/**
 * A few numbers from a receiving connection's stats: per kind, bytes received and (video)
 * frames decoded; the jitter-buffer delay per emitted frame and RTT/2 give the one-way delay
 * through the server, minus capture and render.
 */
export async function receiveStats(pc) {
  const stats = await pc.getStats();
  const result = { audio: null, video: null, rttMs: null };
  stats.forEach((report) => {
    if (report.type === 'inbound-rtp' && (report.kind === 'audio' || report.kind === 'video')) {
      const jitterMs =
        report.jitterBufferEmittedCount > 0
          ? (1000 * report.jitterBufferDelay) / report.jitterBufferEmittedCount
          : null;
      result[report.kind] = {
        bytesReceived: report.bytesReceived ?? 0,
        packetsReceived: report.packetsReceived ?? 0,
        packetsLost: report.packetsLost ?? 0,
        framesDecoded: report.framesDecoded ?? null,
        frameWidth: report.frameWidth ?? null,
        jitterBufferMs: jitterMs,
      };
    }
    if (report.type === 'candidate-pair' && report.nominated && report.state === 'succeeded') {
      if (report.currentRoundTripTime !== undefined) result.rttMs = 1000 * report.currentRoundTripTime;
    }
  });
  return result;
}

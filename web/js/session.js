// Keeps this page published to the room: publishes the local stream over WHIP and, when the
// session is lost (serve restarted, the network dropped), publishes the same MediaStream
// again by itself — no new getUserMedia, no click — until the server takes it or says the
// token or room is gone.

import { ApiError } from './common.js';
import { publish } from './rtc.js';

/** First retry after this long, doubling up to RETRY_MAX_MS. A restarting serve refuses
 * connections for a second or two and answers at once when back; a 1 s cap keeps the wait
 * after it is back under a second, for one cheap /healthz request a second while it is down. */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 1000;
/** Before publishing again after the connection itself failed: the server also closes it when
 * the host removes us or ends the room, and its notice (on the event stream) should win. */
const NOTICE_GRACE_MS = 1000;
/** 'disconnected' may heal by itself (a short network hiccup); past this it counts as lost.
 * A restarted serve never answers the old session's checks, and the room status (see
 * `absentFrom`) usually tells sooner. */
const DISCONNECTED_GRACE_MS = 2000;

/** The loss reason when the room status says the session is gone (no need to wait). */
const GONE = 'gone from the room';

/** Answers that retrying cannot fix: the token, the participant or the room is gone. */
export function isRefusal(error) {
  return [401, 403, 404, 410].includes(error?.status);
}

/**
 * states: 'connecting' (first publish), 'connected', 'reconnecting', 'refused' (error set),
 * 'stopped'; `error` is the last failure (a retry in progress, or the refusal). Callbacks:
 * changed(state) on every state or error change, published(publisher), lost(publisher, reason).
 */
export class PublishSession {
  constructor({ roomId, token, stream, displayName, retryFirst = true, changed, published, lost }) {
    Object.assign(this, { roomId, token, stream, displayName, retryFirst, changed, published, lost });
    this.state = 'stopped';
    this.publisher = null;
    this.error = null;
    /** Resolves the wait for the current session to be lost (external signals). */
    this.markLost = null;
  }

  /** Publishes; returns once the first attempt succeeded (or throws, without retryFirst) and
   * keeps the session up in the background. */
  async start() {
    this.stopped = false;
    this.set('connecting');
    let first;
    try {
      first = await publish(this.roomId, this.token, this.stream(), this.displayName());
    } catch (e) {
      if (!this.retryFirst || isRefusal(e)) {
        this.set(isRefusal(e) ? 'refused' : 'stopped', e);
        throw e;
      }
      this.set('connecting', e);
    }
    this.keep(first);
  }

  async keep(first) {
    let publisher = first ?? null;
    let delay = RETRY_FIRST_MS;
    while (!this.stopped) {
      if (!publisher) {
        try {
          await reachable();
          publisher = await publish(this.roomId, this.token, this.stream(), this.displayName());
        } catch (e) {
          if (this.stopped) return;
          if (isRefusal(e)) {
            this.set('refused', e);
            return;
          }
          this.set(this.state === 'connecting' ? 'connecting' : 'reconnecting', e);
          await this.pause(delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
          continue;
        }
      }
      if (this.stopped) {
        publisher.leave();
        return;
      }
      this.publisher = publisher;
      this.publishedAt = Date.now();
      this.error = null;
      delay = RETRY_FIRST_MS;
      this.set('connected');
      this.published?.(publisher);
      const reason = await this.sessionLost(publisher.pc);
      if (this.stopped || this.publisher !== publisher) return;
      this.publisher = null;
      this.set('reconnecting', new Error(`connection ${reason}`));
      this.lost?.(publisher, reason);
      // Closes the connection; the DELETE frees the old participant on a server that only lost
      // sight of us (a restarted one answers 404, which is fine).
      publisher.leave();
      publisher = null;
      if (reason !== GONE) await this.pause(NOTICE_GRACE_MS);
    }
  }

  /** The first room status after the event stream came back no longer lists the participant
   * published before the stream dropped (at `droppedAt`): serve restarted and the session is
   * gone; publish again now instead of waiting for ICE to notice. */
  absentFrom(status, droppedAt) {
    // Already reconnecting: the server answers again, so try now rather than after the backoff.
    if (!this.publisher) this.wakeUp?.();
    const id = this.publisher?.participantId;
    if (!id || this.publishedAt > droppedAt) return false;
    if (status.participants.some((p) => p.participant_id === id)) return false;
    // Shown at once, not a moment later when the loop wakes up.
    this.set('reconnecting', new Error('the server restarted'));
    this.markLost?.(GONE);
    return true;
  }

  /** Leaves the room (WHIP DELETE) and stops reconnecting. */
  async stop() {
    this.stopped = true;
    const publisher = this.publisher;
    this.publisher = null;
    this.markLost?.('closed');
    this.wakeUp?.();
    this.set('stopped');
    await publisher?.leave();
  }

  /** Stops without a DELETE (the room ended, or we were removed: the server closed it). */
  abandon() {
    this.stopped = true;
    const publisher = this.publisher;
    this.publisher = null;
    this.markLost?.('closed');
    this.wakeUp?.();
    publisher?.pc.close();
    this.set('stopped');
  }

  set(state, error = null) {
    this.error = error;
    this.state = state;
    this.changed?.(state);
  }

  /** Waits `ms`, or less when `wakeUp` is called (the server is known to answer again). */
  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = () => {
        this.wakeUp = null;
        done();
      };
    });
  }

  /** Resolves with the reason once the connection is lost for good. */
  sessionLost(pc) {
    return new Promise((resolve) => {
      let timer = null;
      const done = (reason) => {
        clearTimeout(timer);
        pc.removeEventListener('connectionstatechange', check);
        this.markLost = null;
        resolve(reason);
      };
      const check = () => {
        const s = pc.connectionState;
        if (s === 'failed' || s === 'closed') done(s);
        if (s === 'disconnected' && !timer) {
          timer = setTimeout(() => done('disconnected'), DISCONNECTED_GRACE_MS);
        }
        if (s === 'connected' && timer) {
          clearTimeout(timer);
          timer = null;
        }
      };
      this.markLost = done;
      pc.addEventListener('connectionstatechange', check);
      check();
    });
  }
}

/** Waits until the server answers at all, without setting up a peer connection per try. */
async function reachable() {
  try {
    await fetch('/healthz', { cache: 'no-store' });
  } catch (_) {
    throw new ApiError(0, 'network', 'cannot reach the server; check your connection');
  }
}

// The watch page's "Ask to join" (连麦 apply): a viewer gives a name and asks; the host sees the
// request at once and accepts or declines. The request is followed as Server-Sent Events with
// the secret the server handed out (no token before the host accepts); on Accept the viewer
// gets a personal guest token and goes to the guest view with it, where it goes on air by
// itself and whose Leave brings it back here.

import { $, api, ApiError } from './common.js';
import { readEventStream } from './sse.js';

const STATES = {
  idle: ['', ''],
  asking: ['Asking…', ''],
  pending: ['Waiting for the host', 'The host sees your request now. Keep this page open.'],
  accepted: ['Accepted', 'Opening your camera and microphone…'],
  declined: ['Not this time', 'The host declined. You can keep watching.'],
  expired: ['No answer', 'The host did not answer in time. You can ask again.'],
  withdrawn: ['Request withdrawn', 'You can ask again any time.'],
  refused: ['Cannot ask', ''],
};

export class AskToJoin {
  constructor({ roomId, onAccepted }) {
    Object.assign(this, { roomId, onAccepted });
    this.base = `/api/v1/rooms/${encodeURIComponent(roomId)}/requests`;
    this.request = null;
    this.controller = null;
    this.state = 'idle';
    $('apply-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.ask();
    });
    $('apply-cancel').addEventListener('click', () => this.withdraw());
  }

  /** The room says whether viewers may ask (`join_requests.enabled`). */
  update(room) {
    const enabled = room?.join_requests?.enabled ?? false;
    $('apply').hidden = !enabled && this.state !== 'pending';
  }

  show(state, detail) {
    this.state = state;
    const [title, text] = STATES[state];
    document.body.dataset.apply = state;
    $('apply-state').textContent = title;
    $('apply-detail').textContent = detail ?? text;
    const waiting = state === 'pending' || state === 'asking';
    $('apply-form').hidden = waiting || state === 'accepted';
    $('apply-cancel').hidden = state !== 'pending';
  }

  async ask() {
    const name = $('apply-name').value.trim();
    if (!name) {
      $('apply-name').focus();
      return;
    }
    this.show('asking');
    try {
      this.request = await api(this.base, { method: 'POST', body: { name } });
    } catch (e) {
      this.show('refused', e.message);
      return;
    }
    this.follow();
  }

  /** Follows the request until it is answered; a dropped stream is opened again (the request
   * still waits on the host's list), a forgotten one (404) counts as expired. */
  async follow() {
    const { request_id: id, secret } = this.request;
    this.controller = new AbortController();
    const { signal } = this.controller;
    while (!signal.aborted && ['asking', 'pending'].includes(this.state)) {
      try {
        const response = await fetch(`${this.base}/${encodeURIComponent(id)}/events`, {
          headers: { Authorization: `Bearer ${secret}`, Accept: 'text/event-stream' },
          signal,
          cache: 'no-store',
        });
        if (response.status === 404 || response.status === 401) {
          this.show('expired');
          return;
        }
        if (!response.ok) throw new ApiError(response.status, 'http_error', `the server answered ${response.status}`);
        await readEventStream(response, (name, data) => this.outcome(name, JSON.parse(data)));
      } catch (e) {
        if (signal.aborted) return;
        console.warn(`request to join: ${e.message}; following it again`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  outcome(name, data) {
    if (name === 'pending') this.show('pending');
    else if (name === 'accepted') {
      this.show('accepted');
      this.onAccepted(data);
    } else if (name === 'declined') this.show('declined', `The host declined (${data.reason}). You can keep watching.`);
    else if (STATES[name]) this.show(name);
  }

  async withdraw() {
    if (!this.request) return;
    const { request_id: id, secret } = this.request;
    this.controller?.abort();
    try {
      await fetch(`${this.base}/${encodeURIComponent(id)}`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${secret}` },
      });
    } finally {
      this.request = null;
      this.show('withdrawn');
    }
  }
}

// The studio's "Requests to join" panel: viewers on the watch page who asked to come on air
// (连麦), with Accept and Decline, the switch that lets viewers ask, and the cap on guests on
// air. Fed by the room status (`join_requests`) and refreshed at once on the event stream's
// `join_request` / `join_request_closed` notices.

import { $, api, el, toast } from './common.js';

const waited = (secs) => (secs < 60 ? `${Math.floor(secs)} s` : `${Math.floor(secs / 60)} min`);

export class JoinRequestsPanel {
  constructor({ roomId, token }) {
    Object.assign(this, { roomId, token });
    this.base = `/api/v1/rooms/${encodeURIComponent(roomId)}/requests`;
    this.view = null;
    $('requests-enabled').addEventListener('change', () => this.saveSettings());
    $('requests-max').addEventListener('change', () => this.saveSettings());
  }

  /** The room status carries the same view (host only). */
  update(status) {
    if (status.join_requests) this.render(status.join_requests);
  }

  async refresh() {
    try {
      this.render(await api(this.base, { token: this.token }));
    } catch (e) {
      console.warn(`cannot list requests to join: ${e.message}`);
    }
  }

  render(view) {
    this.view = view;
    $('requests-enabled').checked = view.enabled;
    const max = $('requests-max');
    if (document.activeElement !== max) max.value = view.max_guests ?? '';
    const pending = view.pending ?? [];
    $('requests-count').textContent = String(pending.length);
    $('requests-count').hidden = pending.length === 0;
    $('requests-empty').hidden = pending.length > 0;
    $('requests').replaceChildren(
      ...pending.map((request) =>
        el(
          'li',
          { 'data-request-id': request.request_id },
          el(
            'div',
            { class: 'output-head' },
            el('span', { class: 'output-name', text: request.name }),
            el('span', { class: 'muted small', text: `waiting ${waited(request.waiting_secs)}` }),
          ),
          el(
            'div',
            { class: 'copy-row' },
            this.button('Accept', 'btn btn-small btn-primary', request, 'accept'),
            this.button('Decline', 'btn btn-small', request, 'decline'),
          ),
        ),
      ),
    );
  }

  button(text, cls, request, action) {
    const button = el('button', { class: cls, text, 'data-action': action });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api(`${this.base}/${encodeURIComponent(request.request_id)}/${action}`, {
          method: 'POST',
          token: this.token,
        });
        toast(action === 'accept' ? `${request.name} is coming on air` : `Declined ${request.name}`);
      } catch (e) {
        toast(e.message, 'error');
      }
      await this.refresh();
    });
    return button;
  }

  async saveSettings() {
    const raw = $('requests-max').value.trim();
    const max = raw === '' ? null : Math.max(0, Math.floor(Number(raw)));
    try {
      const view = await api(this.base, {
        method: 'PUT',
        token: this.token,
        body: { enabled: $('requests-enabled').checked, max_guests: Number.isFinite(max) ? max : null },
      });
      this.render(view);
    } catch (e) {
      toast(e.message, 'error');
    }
  }
}

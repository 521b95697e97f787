// The studio's "Recording" panel: start and stop recording the program, and the recorded parts
// with their state, length and size, to download or delete. The status's `recording` says
// what runs now; the list is fetched when that changes (a part starts or ends) and on demand.

import { $, api, el, toast } from './common.js';

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const minutes = (secs) => `${Math.floor(secs / 60)}:${String(Math.floor(secs % 60)).padStart(2, '0')}`;

export class RecordingsPanel {
  constructor({ roomId, token }) {
    Object.assign(this, { roomId, token });
    this.base = `/api/v1/rooms/${encodeURIComponent(roomId)}/recordings`;
    this.seen = null;
    $('record').addEventListener('click', () => this.start());
    $('stop-record').addEventListener('click', () => this.stop());
    this.refresh();
  }

  /** Called with every room status. */
  update(status) {
    const rec = status.recording;
    const live = status.broadcast === 'live';
    $('record').hidden = Boolean(rec);
    $('record').disabled = !live;
    $('stop-record').hidden = !rec;
    const state = $('record-state');
    state.textContent = rec ? rec.state : live ? 'not recording' : 'records while live';
    state.className = `state state-${rec ? (rec.state === 'recording' ? 'live' : rec.state) : 'idle'}`;
    $('record-reason').textContent = rec?.reason ?? '';
    // A part began or ended: the list changed. A part still closing (its mixer writes the
    // last fragment) is looked at again with the next statuses until it is finished.
    const now = rec ? `${rec.recording_id}:${rec.state}` : 'none';
    if (now !== this.seen || (this.closing && Date.now() - this.listedAt > 1500)) {
      this.seen = now;
      this.refresh();
    }
  }

  async start() {
    $('record').disabled = true;
    try {
      await api(this.base, { method: 'POST', token: this.token });
      toast('Recording the program');
    } catch (e) {
      toast(e.message, 'error');
      $('record').disabled = false;
    }
  }

  async stop() {
    try {
      await api(`${this.base}/active`, { method: 'DELETE', token: this.token });
      toast('Recording stopped');
    } catch (e) {
      toast(e.message, 'error');
    }
  }

  async refresh() {
    try {
      this.render(await api(this.base, { token: this.token }));
    } catch (e) {
      console.warn(`cannot list recordings: ${e.message}`);
    }
  }

  render(parts) {
    const active = this.seen?.split(':')[0];
    this.closing = parts.some((p) => p.state === 'recording' && p.recording_id !== active);
    this.listedAt = Date.now();
    $('recordings-empty').hidden = parts.length > 0;
    $('recordings').replaceChildren(
      ...parts.map((part) =>
        el(
          'li',
          { 'data-recording-id': part.recording_id },
          el(
            'div',
            { class: 'output-head' },
            el('span', {
              class: 'output-name',
              text: `${new Date(part.started_at).toLocaleString()} · part ${part.part}`,
            }),
            el('span', { class: `state state-${part.state === 'complete' ? 'idle' : part.state}`, text: part.state }),
          ),
          el('div', { class: 'output-stats', text: `${minutes(part.duration_s)} · ${megabytes(part.size_bytes)}` }),
          part.reason ? el('div', { class: 'output-reason small', text: part.reason }) : null,
          el(
            'div',
            { class: 'copy-row' },
            this.downloadButton(part),
            part.state === 'recording' ? null : this.deleteButton(part),
          ),
        ),
      ),
    );
  }

  downloadButton(part) {
    const button = el('button', { class: 'btn btn-small', text: 'Download' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        // A short-lived link with a ticket for this file: the browser streams it to disk (the
        // token stays in headers; fetching the file itself would hold it all in memory).
        const { url } = await api(`${this.base}/${encodeURIComponent(part.recording_id)}/link`, {
          method: 'POST',
          token: this.token,
        });
        const link = el('a', { href: url, download: `${part.recording_id}.mp4` });
        document.body.append(link);
        link.click();
        link.remove();
      } catch (e) {
        toast(e.message, 'error');
      }
      button.disabled = false;
    });
    return button;
  }

  deleteButton(part) {
    const button = el('button', { class: 'btn btn-small btn-ghost', text: 'Delete' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api(`${this.base}/${encodeURIComponent(part.recording_id)}`, { method: 'DELETE', token: this.token });
      } catch (e) {
        toast(e.message, 'error');
      }
      await this.refresh();
    });
    return button;
  }
}

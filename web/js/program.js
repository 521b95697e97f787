// The host's live controls of the program (what viewers get): layout and spotlight, each
// participant's level in the mix, and the destinations the mix is pushed to. Every control is one
// API call; the page shows the result from the next room status, so a rejected change never
// leaves the controls claiming something the server did not do.

import { api, el, toast } from './common.js';
import { displayName } from './tiles.js';

const LAYOUTS = [
  ['grid', 'Grid'],
  ['speaker', 'Speaker'],
  ['pip', 'Picture in picture'],
];

// Gain steps offered per participant (linear; the API accepts 0–4).
const GAINS = [0.25, 0.5, 0.75, 1, 1.5, 2];

export class ProgramControls {
  /**
   * @param {object} opts
   * @param {string} opts.roomId
   * @param {string} opts.token host token
   * @param {(status: object) => void} opts.render re-renders the page from an answered status
   * @param {HTMLElement} opts.layoutSelect
   * @param {HTMLFormElement} opts.addOutputForm with an `input[type=url]`
   * @param {{labels: HTMLInputElement, background: HTMLInputElement, logo: HTMLInputElement,
   *   clearLogo: HTMLButtonElement}} opts.look
   */
  constructor({ roomId, token, render, layoutSelect, addOutputForm, look }) {
    this.base = `/api/v1/rooms/${encodeURIComponent(roomId)}`;
    this.token = token;
    this.render = render;
    this.layoutSelect = layoutSelect;
    this.layout = { type: 'grid' };
    layoutSelect.replaceChildren(
      ...LAYOUTS.map(([value, label]) => el('option', { value, text: label })),
    );
    // A custom layout set through the API shows as such until the host picks another.
    layoutSelect.append(el('option', { value: 'custom', text: 'Custom (API)', disabled: true }));
    layoutSelect.addEventListener('change', () =>
      this.setLayout({ type: layoutSelect.value, pin: this.layout.pin }),
    );
    this.lookInputs = look;
    this.lookState = null;
    // The status only says whether there is a logo (never its bytes), and PUT …/look replaces
    // the whole look, so the page keeps the logo it uploaded to send it again with each change.
    this.logoKey = `costream.logo.${roomId}`;
    look.labels.addEventListener('change', () => this.setLook({ labels: look.labels.checked }));
    look.background.addEventListener('change', () => this.setLook({ background: look.background.value }));
    look.logo.addEventListener('change', () => this.uploadLogo(look.logo.files[0]));
    look.clearLogo.addEventListener('click', () => {
      sessionStorage.removeItem(this.logoKey);
      this.setLook({});
    });
    addOutputForm.addEventListener('submit', (event) => {
      event.preventDefault();
      const input = addOutputForm.querySelector('input');
      this.addOutput(input.value.trim()).then((ok) => {
        if (ok) input.value = '';
      });
    });
  }

  /** Follows the room status (layout select, spotlight state, look). */
  update(status) {
    this.layout = status.layout ?? { type: 'grid' };
    if (document.activeElement !== this.layoutSelect) this.layoutSelect.value = this.layout.type;
    if (status.look) {
      this.lookState = status.look;
      const inputs = this.lookInputs;
      inputs.labels.checked = status.look.labels;
      if (document.activeElement !== inputs.background) inputs.background.value = status.look.background;
      inputs.clearLogo.hidden = !status.look.has_logo;
    }
  }

  /** Sends the whole look with `change` applied (the API replaces it as a whole). */
  setLook(change) {
    const current = this.lookState ?? { labels: false, background: '#000000', title: '' };
    const look = { labels: current.labels, background: current.background, title: current.title, ...change };
    const logo = sessionStorage.getItem(this.logoKey);
    if (logo) look.logo = logo;
    return this.call('PUT', '/look', look);
  }

  async uploadLogo(file) {
    if (!file) return;
    if (file.type !== 'image/png') {
      toast('The logo must be a PNG image', 'error');
      return;
    }
    const dataUri = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    sessionStorage.setItem(this.logoKey, dataUri);
    if (!(await this.setLook({}))) sessionStorage.removeItem(this.logoKey);
    this.lookInputs.logo.value = '';
  }

  async call(method, path, body) {
    try {
      const status = await api(`${this.base}${path}`, { method, token: this.token, body });
      if (status && status.room_id) this.render(status);
      return true;
    } catch (e) {
      toast(e.message, 'error');
      return false;
    }
  }

  setLayout(layout) {
    const body = { type: layout.type };
    if (layout.pin && (layout.type === 'speaker' || layout.type === 'pip')) body.pin = layout.pin;
    return this.call('PUT', '/layout', body);
  }

  /** Spotlight: the participant becomes the featured one (speaker layout unless pip is on). */
  spotlight(participantId) {
    const type = this.layout.type === 'pip' ? 'pip' : 'speaker';
    const pinned = this.layout.pin === participantId;
    return this.setLayout({ type, pin: pinned ? undefined : participantId });
  }

  setAudio(participantId, change) {
    return this.call('PUT', `/participants/${encodeURIComponent(participantId)}/audio`, change);
  }

  addOutput(url) {
    if (!url) return Promise.resolve(false);
    return this.call('POST', '/outputs', { url }).then((ok) => {
      if (ok) toast('Destination added');
      return ok;
    });
  }

  removeOutput(outputId) {
    return this.call('DELETE', `/outputs/${encodeURIComponent(outputId)}`);
  }

  /** The per-participant controls shown in the people list. */
  participantControls(participant) {
    const id = participant.participant_id;
    const audio = participant.audio ?? { gain: 1, muted: false };
    const pinned = this.layout.pin === id;
    const gain = el(
      'select',
      {
        class: 'gain',
        'aria-label': `${displayName(participant)}'s level in the program`,
        onchange: (event) => this.setAudio(id, { gain: Number(event.currentTarget.value) }),
      },
      ...GAINS.map((g) =>
        el('option', { value: String(g), text: `${Math.round(g * 100)} %`, selected: g === audio.gain }),
      ),
    );
    if (!GAINS.includes(audio.gain)) {
      gain.prepend(el('option', { value: String(audio.gain), text: `${Math.round(audio.gain * 100)} %`, selected: true }));
    }
    return el(
      'span',
      { class: 'person-controls' },
      el('button', {
        class: `btn btn-ghost btn-small spotlight${pinned ? ' on' : ''}`,
        text: pinned ? 'Unpin' : 'Spotlight',
        title: 'Feature this person in the program',
        onclick: () => this.spotlight(id),
      }),
      el('button', {
        class: `btn btn-ghost btn-small mute-in-program${audio.muted ? ' on' : ''}`,
        text: audio.muted ? 'Unmute in mix' : 'Mute in mix',
        'aria-pressed': String(audio.muted),
        onclick: () => this.setAudio(id, { muted: !audio.muted }),
      }),
      gain,
    );
  }

  /** A remove button for one output row. */
  removeOutputButton(output) {
    return el('button', {
      class: 'btn btn-ghost btn-small remove-output',
      text: 'Remove',
      title: 'Stop pushing to this destination',
      onclick: () => {
        if (confirm('Stop sending the program to this destination?')) this.removeOutput(output.output_id);
      },
    });
  }
}

// Remote participants' video tiles: one <video> per subscription, which also plays their audio.

import { el } from './common.js';

export class RemoteTiles {
  /**
   * @param container where tiles go (after the self view)
   * @param unmuteButton shown when the browser refused to autoplay sound
   */
  constructor(container, unmuteButton) {
    this.container = container;
    this.unmuteButton = unmuteButton;
    /** participantId → { tile, video } */
    this.tiles = new Map();
    unmuteButton.addEventListener('click', () => {
      for (const { video } of this.tiles.values()) {
        video.muted = false;
        video.play().catch(() => {});
      }
      unmuteButton.hidden = true;
    });
  }

  add(participant, stream) {
    this.remove(participant.participant_id);
    const video = el('video', { autoplay: true, playsinline: true, class: 'remote' });
    video.dataset.participantId = participant.participant_id;
    video.srcObject = stream;
    const label = el('span', { class: 'name', text: displayName(participant) });
    const tile = el('figure', { class: 'tile tile-remote' }, video, el('figcaption', {}, label));
    tile.dataset.participantId = participant.participant_id;
    this.container.append(tile);
    this.tiles.set(participant.participant_id, { tile, video, label });
    video.play().catch(() => {
      // No user gesture yet: play muted so the picture moves, and offer a sound button.
      video.muted = true;
      video.play().catch(() => {});
      this.unmuteButton.hidden = false;
    });
  }

  remove(participantId) {
    const entry = this.tiles.get(participantId);
    if (!entry) return;
    entry.video.srcObject = null;
    entry.tile.remove();
    this.tiles.delete(participantId);
  }

  /** Keeps labels current (display names come with the status). */
  update(participants) {
    for (const p of participants) {
      const entry = this.tiles.get(p.participant_id);
      if (entry) entry.label.textContent = displayName(p);
    }
  }

  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }

  get size() {
    return this.tiles.size;
  }
}

export function displayName(participant) {
  const name = participant.display_name || (participant.role === 'host' ? 'Host' : 'Guest');
  return participant.role === 'host' ? `${name} (host)` : name;
}

// The studio's "Quality" panel: the program's own figures (mixer-added latency, A/V offset,
// frozen or black picture) and each publisher's reception, from the room status (README
// "Quality figures" says how each is measured).

import { $, el } from './common.js';
import { displayName } from './tiles.js';

const ms = (v) => (typeof v === 'number' ? `${Math.round(v)} ms` : '–');

/** Signed A/V offset: which of the two comes first, in words a host understands. */
function avOffset(v) {
  if (typeof v !== 'number') return '–';
  if (Math.abs(v) < 1) return 'in sync';
  return v > 0 ? `picture ${Math.round(v)} ms late` : `sound ${Math.round(-v)} ms late`;
}

function programState(q) {
  if (q.frozen) return { text: `frozen for ${(q.still_ms / 1000).toFixed(1)} s`, cls: 'state-failed' };
  if (q.black) return { text: 'black', cls: 'state-failed' };
  return { text: 'moving', cls: 'state-live' };
}

function lossPercent(q) {
  const expected = q.packets_received + Math.max(q.packets_lost, 0);
  return expected > 0 ? (100 * Math.max(q.packets_lost, 0)) / expected : 0;
}

export function renderQuality(status) {
  const q = status.quality;
  $('quality-latency').textContent = q ? `${ms(q.latency_ms)} (max ${ms(q.latency_max_ms)})` : '–';
  $('quality-av').textContent = q ? avOffset(q.av_offset_ms) : '–';
  const program = $('quality-program');
  if (q) {
    const { text, cls } = programState(q);
    program.textContent = text;
    program.className = `state ${cls}`;
  } else {
    program.textContent = status.broadcast === 'live' ? 'measuring…' : 'not live';
    program.className = '';
  }
  $('quality-people').replaceChildren(
    ...status.participants
      .filter((p) => p.tracks.length > 0)
      .map((p) => {
        const pq = p.quality ?? {};
        const parts = [
          `loss ${lossPercent(pq).toFixed(1)} %`,
          `jitter ${ms(pq.jitter_ms)}`,
          `A/V ${avOffset(pq.av_offset_ms)}`,
        ];
        if (typeof pq.join_to_visible_ms === 'number') parts.push(`on air ${ms(pq.join_to_visible_ms)} after joining`);
        return el(
          'li',
          { 'data-participant-id': p.participant_id },
          el('span', { class: 'person-name', text: displayName(p) }),
          el('span', { class: 'muted small', text: ` ${parts.join(' · ')}` }),
        );
      }),
  );
}

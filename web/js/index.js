// `/`: create a room and open its studio.

import { $, api, el, rememberToken, takeToken } from './common.js';

const rows = $('output-rows');
// A room creation link (`/#token=…`, a token with roomCreate) lets a host start rooms on a
// server with API keys; the token leaves the address bar at once (see takeToken).
const creationToken = takeToken('', 'creator');

function addOutputRow() {
  const row = el(
    'div',
    { class: 'output-row' },
    el('input', {
      class: 'output-url',
      type: 'url',
      placeholder: 'rtmp://live.example.com/app',
      'aria-label': 'RTMP or RTMPS ingest URL',
      autocomplete: 'off',
    }),
    el('input', {
      class: 'output-key',
      type: 'password',
      placeholder: 'stream key',
      'aria-label': 'stream key',
      autocomplete: 'off',
    }),
    el('button', {
      type: 'button',
      class: 'btn btn-ghost',
      text: 'Remove',
      'aria-label': 'remove this destination',
      onclick: () => {
        row.remove();
        if (!rows.children.length) addOutputRow();
      },
    }),
  );
  rows.append(row);
}

function destination() {
  return document.querySelector('input[name=destination]:checked').value;
}

for (const radio of document.querySelectorAll('input[name=destination]')) {
  radio.addEventListener('change', () => {
    $('rtmp-outputs').hidden = destination() !== 'rtmp';
  });
}
$('add-output').addEventListener('click', addOutputRow);
addOutputRow();

/** The platform's ingest URL plus the key, as one rtmp(s)://host/app/key URL. */
function outputUrl(row, index) {
  const url = row.querySelector('.output-url').value.trim();
  const key = row.querySelector('.output-key').value.trim();
  if (!url) throw new Error(`destination ${index + 1}: enter the RTMP or RTMPS URL`);
  if (!/^rtmps?:\/\//i.test(url)) {
    throw new Error(`destination ${index + 1}: the URL must start with rtmp:// or rtmps://`);
  }
  return key ? `${url.replace(/\/+$/, '')}/${key.replace(/^\/+/, '')}` : url;
}

function showError(message) {
  const error = $('error');
  error.textContent = message;
  error.hidden = !message;
}

$('create').addEventListener('submit', async (event) => {
  event.preventDefault();
  showError('');
  const body = { name: $('name').value.trim(), preset: $('preset').value };
  try {
    if (destination() === 'rtmp') {
      body.outputs = [...rows.children].map(outputUrl);
    }
  } catch (e) {
    showError(e.message);
    return;
  }
  const button = $('create-button');
  button.disabled = true;
  button.textContent = 'Creating…';
  try {
    // On a server with API keys, creating a room takes a room creation link's token.
    const room = await api('/api/v1/rooms', { method: 'POST', body, token: creationToken });
    rememberToken(room.room_id, 'host', room.host_token);
    // The token rides in the fragment: it never reaches the server in a URL.
    location.assign(`/host/${encodeURIComponent(room.room_id)}#token=${encodeURIComponent(room.host_token)}`);
  } catch (e) {
    showError(e.message);
    button.disabled = false;
    button.textContent = 'Create room and open the studio';
  }
});

// Shared by every page: tokens, API calls, the room's event stream, small DOM helpers.

import { readEventStream } from './sse.js';

/** The `{room}` segment of /host/{room}, /join/{room}, /watch/{room}. */
export function roomIdFromPath() {
  return decodeURIComponent(location.pathname.split('/')[2] || '');
}

/**
 * The room token for this tab. Links carry it in the URL fragment (`#token=…`), which browsers
 * never send to a server; it moves to sessionStorage and the fragment is dropped from the
 * address bar, so it does not linger in history, screenshots or screen shares.
 */
export function takeToken(roomId, role) {
  const key = `costream:${role}:${roomId}`;
  const fromLink = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromLink) {
    sessionStorage.setItem(key, fromLink);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(key);
}

export function rememberToken(roomId, role, token) {
  sessionStorage.setItem(`costream:${role}:${roomId}`, token);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** JSON API call; throws ApiError with the server's `{error, message}`. */
export async function api(path, { method = 'GET', token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'cannot reach the server; check your connection');
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      json?.error ?? 'http_error',
      json?.message ?? `the server answered ${response.status}`,
    );
  }
  return json;
}

/**
 * Follows `GET /api/v1/rooms/{id}/events` (Server-Sent Events read with fetch, so the token
 * goes in the Authorization header, never in a URL). Reconnects with backoff when the stream
 * drops. Handlers: status(json), removed(notice), joinRequests(name, notice) (host only:
 * `join_request`, `join_request_closed`), ended(), reconnecting(), connected(),
 * fatal(ApiError) for answers that retrying cannot fix (404 room gone, 401/403).
 */
export function followRoom(roomId, token, handlers) {
  const controller = new AbortController();
  let stopped = false;
  let delay = 250;

  const dispatch = (name, data) => {
    let payload = null;
    try {
      payload = data ? JSON.parse(data) : null;
    } catch (_) {
      return;
    }
    if (name === 'status') handlers.status?.(payload);
    else if (name === 'removed') handlers.removed?.(payload);
    else if (name.startsWith('join_request')) handlers.joinRequests?.(name, payload);
    else if (name === 'ended') {
      stopped = true;
      handlers.ended?.();
    }
  };

  const readOnce = async () => {
    const response = await fetch(`/api/v1/rooms/${encodeURIComponent(roomId)}/events`, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' },
      signal: controller.signal,
      cache: 'no-store',
    });
    if (!response.ok) {
      let json = null;
      try {
        json = await response.json();
      } catch (_) {
        json = null;
      }
      const error = new ApiError(response.status, json?.error ?? 'http_error', json?.message ?? '');
      if ([401, 403, 404, 410].includes(response.status)) throw Object.assign(error, { fatal: true });
      throw error;
    }
    handlers.connected?.();
    delay = 250;
    await readEventStream(response, dispatch);
  };

  (async () => {
    while (!stopped) {
      try {
        await readOnce();
      } catch (e) {
        if (stopped || controller.signal.aborted) return;
        if (e.fatal) {
          stopped = true;
          handlers.fatal?.(e);
          return;
        }
      }
      if (stopped) return;
      handlers.reconnecting?.();
      await sleep(delay);
      // At most 0.5 s between tries (a refused connection costs nothing): after a serve
      // restart the pages learn from the first status that their sessions are gone (see
      // session.js), so this wait is part of the time guests take to come back.
      delay = Math.min(delay * 2, 500);
    }
  })();

  return {
    close() {
      stopped = true;
      controller.abort();
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `document.getElementById` that fails loudly on a typo. */
export function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} missing`);
  return element;
}

/** Creates an element: el('div', {class: 'x', text: 'hi'}, child, …). */
export function el(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') element.textContent = value;
    else if (key === 'class') element.className = value;
    else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? '' : value);
  }
  element.append(...children.filter((c) => c !== null && c !== undefined));
  return element;
}

export function formatDuration(seconds) {
  if (seconds === undefined || seconds === null) return '–';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function formatBitrate(kbps) {
  if (!kbps) return '0 kbit/s';
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${kbps} kbit/s`;
}

/** Copies text, falling back to selecting it when the clipboard API is unavailable. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    if (input) {
      input.select();
      return document.execCommand?.('copy') ?? false;
    }
    return false;
  }
}

/** Shows a short message in the page's toast area. */
export function toast(message, kind = 'info') {
  let area = document.getElementById('toasts');
  if (!area) {
    area = el('div', { id: 'toasts', class: 'toasts', 'aria-live': 'polite' });
    document.body.append(area);
  }
  const item = el('div', { class: `toast toast-${kind}`, text: message });
  area.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

// Plays a room's mix from the built-in origin: HTTP-FLV with mpegts.js (loaded by the page as
// a classic script, `window.mpegts`) wherever Media Source Extensions allow, else the browser's
// own HLS (iOS Safari, which has no MSE on the iPhone). Offline streams are retried until they
// go live; a stream that ends or stalls goes back to retrying.

const RETRY_MS = 2000;
/** No progress for this long while "live": the stream is gone or stuck; start over. */
const STALL_MS = 5000;

/**
 * The loop both players share. `open(retry)` starts a player on `video` (it calls `retry` when
 * the stream fails or ends), `close()` discards it. An offline stream is tried again every
 * RETRY_MS; a player that makes no progress for `stallMs` is started over.
 * @returns { stop() }
 */
function supervise(video, onState, { open, close, stallMs }) {
  let stopped = false;
  let retryTimer = null;
  let watchdog = null;
  let lastTime = -1;
  let lastProgress = 0;
  let state = null;

  const setState = (next) => {
    if (next !== state) {
      state = next;
      onState(next);
    }
  };

  const teardown = () => {
    clearInterval(watchdog);
    watchdog = null;
    close();
  };

  const retry = () => {
    teardown();
    if (stopped) return;
    setState('offline');
    clearTimeout(retryTimer);
    retryTimer = setTimeout(start, RETRY_MS);
  };

  function start() {
    if (stopped) return;
    if (state !== 'offline') setState('connecting');
    open(retry);
    lastTime = -1;
    lastProgress = Date.now();
    watchdog = setInterval(() => {
      if (video.currentTime > lastTime) {
        if (lastTime >= 0 && video.currentTime > 0) setState('live');
        lastTime = video.currentTime;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > stallMs) {
        retry();
      }
    }, 500);
  }

  start();
  return {
    stop() {
      stopped = true;
      clearTimeout(retryTimer);
      teardown();
    },
  };
}

/** Autoplay with sound may be refused until the viewer interacts; play muted then. */
function playedOrMuted(video, played) {
  played?.catch?.(() => {
    video.muted = true;
    video.play().catch(() => {});
  });
}

/**
 * @param video the <video> element
 * @param url e.g. /live/ROOM.flv
 * @param onState called with 'connecting' | 'live' | 'offline' | 'unsupported'
 * @returns { stop() }
 */
export function playFlv(video, url, onState) {
  const mpegts = window.mpegts;
  if (!flvPlayable()) {
    onState('unsupported');
    return { stop() {} };
  }
  let player = null;
  return supervise(video, onState, {
    stallMs: STALL_MS,
    open(retry) {
      player = mpegts.createPlayer(
        { type: 'flv', isLive: true, url, hasAudio: true, hasVideo: true },
        {
          enableWorker: false,
          enableStashBuffer: false,
          lazyLoad: false,
          liveBufferLatencyChasing: true,
          liveBufferLatencyMaxLatency: 1.5,
          liveBufferLatencyMinRemain: 0.3,
          autoCleanupSourceBuffer: true,
        },
      );
      player.on(mpegts.Events.ERROR, retry);
      player.on(mpegts.Events.LOADING_COMPLETE, retry);
      player.attachMediaElement(video);
      player.load();
      playedOrMuted(video, player.play());
    },
    close() {
      if (!player) return;
      try {
        player.pause();
        player.unload();
        player.detachMediaElement();
        player.destroy();
      } catch (_) {
        // A half-started player may refuse some of these; it is discarded either way.
      }
      player = null;
    },
  });
}

/** Whether mpegts.js can play live HTTP-FLV here (Media Source Extensions). */
function flvPlayable() {
  const mpegts = window.mpegts;
  return Boolean(mpegts && mpegts.isSupported() && mpegts.getFeatureList().mseLivePlayback);
}

/**
 * The room's mix by the best way this browser has: HTTP-FLV (lowest latency) where MSE allows,
 * the browser's native HLS elsewhere (iOS), else 'unsupported'.
 * @returns { stop(), kind: 'flv' | 'hls' | null }
 */
export function playLive(video, roomId, onState) {
  const room = encodeURIComponent(roomId);
  if (flvPlayable()) return { ...playFlv(video, `/live/${room}.flv`, onState), kind: 'flv' };
  if (video.canPlayType('application/vnd.apple.mpegurl')) {
    return { ...playNativeHls(video, `/live/${room}/index.m3u8`, onState), kind: 'hls' };
  }
  onState('unsupported');
  return { stop() {}, kind: null };
}

/** The browser's own HLS player (Safari plays the origin's LL-HLS as such). */
export function playNativeHls(video, url, onState) {
  return supervise(video, onState, {
    // HLS starts slower than FLV (a playlist, then segments): allow it twice as long.
    stallMs: STALL_MS * 2,
    open(retry) {
      // Handlers, not listeners: each start replaces the last, and `close` removes them
      // before emptying the element (which must not count as a failure).
      video.onerror = retry;
      video.onended = retry;
      video.src = url;
      playedOrMuted(video, video.play());
    },
    close() {
      video.onerror = null;
      video.onended = null;
      video.removeAttribute('src');
      video.load();
    },
  });
}

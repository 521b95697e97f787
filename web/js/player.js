// Plays a room's mix from the built-in origin (HTTP-FLV) with mpegts.js, which the page loads
// as a classic script (`window.mpegts`). Offline streams are retried until they go live; a
// stream that ends or stalls goes back to retrying.

const RETRY_MS = 2000;
/** No progress for this long while "live": the stream is gone or stuck; start over. */
const STALL_MS = 5000;

/**
 * @param video the <video> element
 * @param url e.g. /live/ROOM.flv
 * @param onState called with 'connecting' | 'live' | 'offline' | 'unsupported'
 * @returns { stop() }
 */
export function playFlv(video, url, onState) {
  const mpegts = window.mpegts;
  if (!mpegts || !mpegts.isSupported() || !mpegts.getFeatureList().mseLivePlayback) {
    onState('unsupported');
    return { stop() {} };
  }
  let player = null;
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
    if (player) {
      try {
        player.pause();
        player.unload();
        player.detachMediaElement();
        player.destroy();
      } catch (_) {
        // A half-started player may refuse some of these; it is discarded either way.
      }
      player = null;
    }
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
    const played = player.play();
    // Autoplay with sound may be refused until the viewer interacts; play muted then.
    played?.catch?.(() => {
      video.muted = true;
      video.play().catch(() => {});
    });
    lastTime = -1;
    lastProgress = Date.now();
    watchdog = setInterval(() => {
      if (video.currentTime > lastTime) {
        if (lastTime >= 0 && video.currentTime > 0) setState('live');
        lastTime = video.currentTime;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > STALL_MS) {
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

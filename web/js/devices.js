// The local camera and microphone: preview, device pickers, mute, and switching devices while
// publishing (RTCRtpSender.replaceTrack: the remote side sees the new device without any
// renegotiation).

import { el } from './common.js';

export class LocalMedia {
  /**
   * @param preview <video> for the self view (muted)
   * @param cameraSelect, micSelect <select> device pickers
   * @param video ideal capture size, e.g. { width: 1280, height: 720, frameRate: 30 }
   */
  constructor({ preview, cameraSelect, micSelect, video }) {
    Object.assign(this, { preview, cameraSelect, micSelect, videoIdeal: video });
    this.stream = new MediaStream();
    this.senders = null;
    this.cameraOn = true;
    this.micOn = true;
    cameraSelect.addEventListener('change', () => this.switchDevice('video', cameraSelect.value));
    micSelect.addEventListener('change', () => this.switchDevice('audio', micSelect.value));
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.listDevices());
  }

  /** Opens the default camera and microphone. Throws a message a person can act on. */
  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error(
        'this browser cannot use a camera here; open the page over https:// (or http://localhost)',
      );
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: this.videoConstraints(),
        audio: this.audioConstraints(),
      });
    } catch (e) {
      throw new Error(describeMediaError(e));
    }
    this.stream = stream;
    this.preview.srcObject = stream;
    this.preview.muted = true;
    await this.listDevices();
    return stream;
  }

  videoConstraints(deviceId) {
    const { width, height, frameRate } = this.videoIdeal;
    return {
      deviceId: deviceId ? { exact: deviceId } : undefined,
      width: { ideal: width },
      height: { ideal: height },
      frameRate: { ideal: frameRate },
    };
  }

  audioConstraints(deviceId) {
    return {
      deviceId: deviceId ? { exact: deviceId } : undefined,
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
    };
  }

  track(kind) {
    return this.stream.getTracks().find((t) => t.kind === kind) ?? null;
  }

  async listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    fill(this.cameraSelect, devices.filter((d) => d.kind === 'videoinput'), this.track('video'));
    fill(this.micSelect, devices.filter((d) => d.kind === 'audioinput'), this.track('audio'));
  }

  /** Publishing from now on: device switches go to these senders ({audio, video}). */
  attach(senders) {
    this.senders = senders;
  }

  detach() {
    this.senders = null;
  }

  async switchDevice(kind, deviceId) {
    const old = this.track(kind);
    if (old && old.getSettings().deviceId === deviceId) return;
    const constraints =
      kind === 'video'
        ? { video: this.videoConstraints(deviceId) }
        : { audio: this.audioConstraints(deviceId) };
    const fresh = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
    fresh.enabled = kind === 'video' ? this.cameraOn : this.micOn;
    await this.senders?.[kind]?.replaceTrack(fresh);
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(fresh);
    // A fresh object makes the preview pick up the new track at once.
    this.preview.srcObject = new MediaStream(this.stream.getTracks());
  }

  /** Mute keeps the track and its sender: the others get black video / silence at once, and
   * unmuting needs no renegotiation either. */
  setCamera(on) {
    this.cameraOn = on;
    const track = this.track('video');
    if (track) track.enabled = on;
  }

  setMic(on) {
    this.micOn = on;
    const track = this.track('audio');
    if (track) track.enabled = on;
  }

  stop() {
    for (const track of this.stream.getTracks()) track.stop();
  }
}

function fill(select, devices, current) {
  const selected = current?.getSettings().deviceId;
  select.replaceChildren(
    ...devices.map((d, i) =>
      el('option', {
        value: d.deviceId,
        text: d.label || `${d.kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`,
        selected: d.deviceId === selected,
      }),
    ),
  );
  select.disabled = devices.length < 2;
}

function describeMediaError(e) {
  switch (e?.name) {
    case 'NotAllowedError':
      return 'camera and microphone access was denied; allow it in the address bar and reload';
    case 'NotFoundError':
      return 'no camera or microphone found; plug one in and reload';
    case 'NotReadableError':
      return 'the camera or microphone is in use by another application';
    default:
      return `cannot open the camera or microphone (${e?.message ?? e})`;
  }
}

/**
 * Wires a page's camera and mic toggle buttons to `media`: `aria-pressed` says "off", the label
 * says what a click does. Only `track.enabled` changes, so nothing is renegotiated.
 */
export function wireMediaToggles(media, cameraButton, micButton) {
  const toggle = (button, set, labels) => {
    button.addEventListener('click', () => {
      const off = button.getAttribute('aria-pressed') !== 'true';
      set(!off);
      button.setAttribute('aria-pressed', String(off));
      button.textContent = off ? labels.on : labels.off;
    });
  };
  toggle(cameraButton, (on) => media.setCamera(on), { on: 'Turn camera on', off: 'Turn camera off' });
  toggle(micButton, (on) => media.setMic(on), { on: 'Unmute mic', off: 'Mute mic' });
}

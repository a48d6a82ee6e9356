// Verifiable synthetic media, for `?media=pattern`: the same picture as clients/media.py's
// PatternVideoTrack (frame number + CRC-8 painted as luma blocks, a bar that moves 4 px per
// frame over noise), so `hoinghi bridge --expect-frames N --from <this page>` can check that
// the browser's frames arrive right and in order, and a 440 Hz tone like ToneAudioTrack.
// Keep the geometry in step with clients/media.py (_Layout, paint_frame_number, make_frame):
// tests/e2e/test_client_units.py reads this pattern with the Python reader and fails on drift.

// 3 rows of 1 marker + 8 bits = 24 bits (16-bit number + CRC-8), in blocks of whole 16x16
// macroblocks on the macroblock grid.
const ROWS = 3;
const COLS = 9;
const MB = 16;
const BAR_WIDTH = 16;
const BAR_STEP = 4;
const BLACK = 16;
const GRAY = 128;
const WHITE = 235;

function crc8(bytes) {
  let crc = 0xff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
  }
  return crc;
}

function codeWord(n) {
  n &= 0xffff;
  return n | (crc8([n >> 8, n & 0xff]) << 16);
}

// Canvas pixels are RGB; Chromium converts to video-range luma (16..235), so a gray of luma L
// is painted as RGB (L - 16) * 255 / 219.
const rgb = (luma) => Math.max(0, Math.min(255, Math.round(((luma - 16) * 255) / 219)));

function layout(width, height) {
  const bw = MB * Math.max(1, Math.floor(width / (MB * 10)));
  const bh = bw;
  const x0 = Math.floor(Math.floor((width - COLS * bw) / 2) / MB) * MB;
  const y0 = Math.max(MB, Math.floor(Math.floor(bh / 2) / MB) * MB);
  const codeBottom = y0 + ROWS * bh;
  return { bw, bh, x0, y0, codeBottom, barTop: codeBottom + MB };
}

// 320x240 like PatternVideoTrack: its noise texture is costly to encode, and at 640x480 the
// browser sent ~3 Mbit/s, enough to lose packets on a loaded loopback.
export function patternVideoTrack({ width = 320, height = 240, fps = 30 } = {}) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { alpha: false });
  const lay = layout(width, height);
  // A bank of noise textures so every frame differs, as a camera's would.
  const rows = height - lay.barTop;
  const bank = Array.from({ length: 8 }, () => {
    const img = ctx.createImageData(width, rows);
    for (let i = 0; i < img.data.length; i += 4) {
      const v = rgb(GRAY + Math.floor(Math.random() * 97) - 48);
      img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
      img.data[i + 3] = 255;
    }
    return img;
  });
  // captureStream(0) + requestFrame(): exactly one video frame per painted frame, so a
  // frame number is never sent twice (the checker would count a repeat as a regression).
  const stream = canvas.captureStream(0);
  const track = stream.getVideoTracks()[0];
  // Keep the resolution under bandwidth pressure: the checker needs at least 208x120 and
  // reads block positions proportionally, so a frame rate drop is fine, a downscale not.
  track.contentHint = "detail";
  let n = 0;
  const paint = () => {
    ctx.fillStyle = `rgb(${rgb(GRAY)},${rgb(GRAY)},${rgb(GRAY)})`;
    ctx.fillRect(0, 0, width, lay.barTop);
    const word = codeWord(n);
    for (let row = 0; row < ROWS; row++) {
      for (let col = 0; col < COLS; col++) {
        // Markers white, black, white; then the word's bits, low first.
        const bit = col === 0 ? row % 2 === 0 : (word >> (row * (COLS - 1) + col - 1)) & 1;
        const v = rgb(bit ? WHITE : BLACK);
        ctx.fillStyle = `rgb(${v},${v},${v})`;
        ctx.fillRect(lay.x0 + col * lay.bw, lay.y0 + row * lay.bh, lay.bw, lay.bh);
      }
    }
    ctx.putImageData(bank[n % bank.length], 0, lay.barTop);
    const white = rgb(WHITE);
    ctx.fillStyle = `rgb(${white},${white},${white})`;
    const x = ((n & 0xffff) * BAR_STEP) % width;
    ctx.fillRect(x, lay.barTop, Math.min(BAR_WIDTH, width - x), rows);
    if (x + BAR_WIDTH > width) ctx.fillRect(0, lay.barTop, x + BAR_WIDTH - width, rows);
    track.requestFrame();
    n = (n + 1) & 0xffff;
  };
  const timer = setInterval(paint, 1000 / fps);
  track.addEventListener("ended", () => clearInterval(timer));
  paint();
  return track;
}

export function toneAudioTrack(freq = 440, gain = 0.3) {
  const ac = new AudioContext();
  const osc = ac.createOscillator();
  const amp = ac.createGain();
  osc.frequency.value = freq;
  amp.gain.value = gain;
  const dest = ac.createMediaStreamDestination();
  osc.connect(amp).connect(dest);
  osc.start();
  return dest.stream.getAudioTracks()[0];
}

export function patternMedia() {
  return [
    { track: toneAudioTrack(), source: "microphone" },
    { track: patternVideoTrack(), source: "camera" },
  ];
}

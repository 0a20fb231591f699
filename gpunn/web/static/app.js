// gpunn's page: draw a digit, preprocess it as MNIST did, run the network, draw every layer.
//
// The network comes from window.GPUNN_MODEL (gpunn.web.model_bundle: each layer's config and
// its float32 weights in base64). The forward pass below mirrors gpunn.layers, in float64 from
// the float32 weights; the tests hold it to gpunn's own forward pass layer by layer. The
// preprocessing mirrors gpunn.images.load_digit, down to Pillow's Lanczos resampling and
// Python's round-half-to-even, so the page sees what `gpunn predict` would see.
"use strict";
(function () {
  const MODEL = window.GPUNN_MODEL;
  const SIDE = 28, BOX = 20, INK = 0.2, PIXELS = SIDE * SIDE;
  const f32 = Math.fround;

  // -- decoding the bundle ---------------------------------------------------------------
  function floats(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  }
  const layers = MODEL.layers.map((entry) => Object.assign({}, entry, {
    w: entry.w ? floats(entry.w) : null,
    b: entry.b ? floats(entry.b) : null,
  }));
  const tests = MODEL.tests ? {
    pixels: floats(MODEL.tests.pixels), labels: MODEL.tests.labels,
    predicted: MODEL.tests.predicted, wrong: MODEL.tests.wrong, index: MODEL.tests.index,
  } : null;

  // -- MNIST's preprocessing (gpunn.images.load_digit) ------------------------------------
  function roundHalfEven(x) {  // Python's round() and numpy.round()
    const f = Math.floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }
  function median(values) {
    const s = Float64Array.from(values).sort(), n = s.length;
    return n % 2 ? s[(n - 1) / 2] : f32((s[n / 2 - 1] + s[n / 2]) / 2);
  }
  function lanczos(x) {
    const sinc = (t) => (t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t));
    return x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0;
  }
  // Pillow's precompute_coeffs and normalize_coeffs_8bpc: fixed-point taps per output pixel
  const PRECISION = 1 << 22;
  function coefficients(inSize, outSize) {
    const scale = inSize / outSize, filterscale = Math.max(scale, 1);
    const support = 3 * filterscale, out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = new Float64Array(xmax);
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        k[x] = lanczos((x + xmin - center + 0.5) / filterscale);
        ww += k[x];
      }
      for (let x = 0; x < xmax; x++) {
        const v = ww !== 0 ? k[x] / ww : k[x];
        k[x] = v < 0 ? Math.trunc(-0.5 + v * PRECISION) : Math.trunc(0.5 + v * PRECISION);
      }
      out.push({ xmin, k });
    }
    return out;
  }
  function clip8(ss) {
    if (ss <= 0) return 0;
    const v = Math.floor(ss / PRECISION);
    return v > 255 ? 255 : v;
  }
  // resize a uint8 image (w x h) to (ow x oh) as Pillow's Image.resize(..., LANCZOS) does:
  // a horizontal pass, rounded to uint8, then a vertical pass
  function resizeLanczos(src, w, h, ow, oh) {
    let cur = src, cw = w;
    if (ow !== w) {
      const cs = coefficients(w, ow), tmp = new Uint8Array(ow * h);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < ow; x++) {
          const { xmin, k } = cs[x];
          let ss = PRECISION / 2;
          for (let i = 0; i < k.length; i++) ss += cur[y * w + xmin + i] * k[i];
          tmp[y * ow + x] = clip8(ss);
        }
      }
      cur = tmp; cw = ow;
    }
    if (oh !== h) {
      const cs = coefficients(h, oh), tmp = new Uint8Array(cw * oh);
      for (let y = 0; y < oh; y++) {
        const { xmin, k } = cs[y];
        for (let x = 0; x < cw; x++) {
          let ss = PRECISION / 2;
          for (let i = 0; i < k.length; i++) ss += cur[(xmin + i) * cw + x] * k[i];
          tmp[y * cw + x] = clip8(ss);
        }
      }
      cur = tmp;
    }
    return cur;
  }
  // RGBA pixels of a drawing -> the (784,) input, or null when nothing is drawn
  function preprocess(rgba, w, h) {
    const grey = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) {
      let r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
      const a = rgba[4 * i + 3];
      if (a !== 255) {  // transparent parts count as white paper, as load_digit composites them
        r = Math.round((r * a + 255 * (255 - a)) / 255);
        g = Math.round((g * a + 255 * (255 - a)) / 255);
        b = Math.round((b * a + 255 * (255 - a)) / 255);
      }
      grey[i] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 255;  // Pillow's "L"
    }
    const border = [];
    for (let x = 0; x < w; x++) border.push(grey[x], grey[(h - 1) * w + x]);
    for (let y = 0; y < h; y++) border.push(grey[y * w], grey[y * w + w - 1]);
    let paper = median(border);
    if (paper > 0.5) {  // dark ink on light paper: MNIST is light ink on black
      for (let i = 0; i < grey.length; i++) grey[i] = 1 - grey[i];
      paper = f32(1 - paper);
    }
    let top = 0;
    for (let i = 0; i < grey.length; i++) {
      grey[i] = Math.max(f32(grey[i] - paper), 0);
      if (grey[i] > top) top = grey[i];
    }
    if (top < 0.1) return null;
    let r0 = h, r1 = -1, c0 = w, c1 = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = (grey[y * w + x] = f32(grey[y * w + x] / top));
        if (v >= INK) {
          if (y < r0) r0 = y;
          if (y > r1) r1 = y;
          if (x < c0) c0 = x;
          if (x > c1) c1 = x;
        }
      }
    }
    const bh = r1 - r0 + 1, bw = c1 - c0 + 1;
    const crop = new Uint8Array(bw * bh);
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) {
        crop[y * bw + x] = roundHalfEven(f32(grey[(y + r0) * w + x + c0] * 255));
      }
    }
    const factor = BOX / Math.max(bh, bw);
    const ow = Math.max(1, roundHalfEven(bw * factor)), oh = Math.max(1, roundHalfEven(bh * factor));
    const box = resizeLanczos(crop, bw, bh, ow, oh);
    let total = 0, sy = 0, sx = 0;
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        const v = f32(box[y * ow + x] / 255);
        total += v; sy += y * v; sx += x * v;
      }
    }
    const field = new Float32Array(PIXELS);
    if (total === 0) return field;
    let ty = roundHalfEven((SIDE - 1) / 2 - sy / total);
    let tx = roundHalfEven((SIDE - 1) / 2 - sx / total);
    ty = Math.min(Math.max(ty, 0), SIDE - oh);
    tx = Math.min(Math.max(tx, 0), SIDE - ow);
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) field[(y + ty) * SIDE + x + tx] = f32(box[y * ow + x] / 255);
    }
    return field;
  }

  // -- the forward pass (gpunn.layers, in float64) ------------------------------------------
  const ACTIVATIONS = {
    sigmoid: (z) => { for (let i = 0; i < z.length; i++) z[i] = 0.5 * (1 + Math.tanh(z[i] / 2)); },
    tanh: (z) => { for (let i = 0; i < z.length; i++) z[i] = Math.tanh(z[i]); },
    relu: (z) => { for (let i = 0; i < z.length; i++) z[i] = z[i] > 0 ? z[i] : 0; },
    linear: () => {},
    step: (z) => { for (let i = 0; i < z.length; i++) z[i] = z[i] > 0 ? 1 : 0; },
    softmax: (z) => {
      let m = -Infinity, s = 0;
      for (let i = 0; i < z.length; i++) m = Math.max(m, z[i]);
      for (let i = 0; i < z.length; i++) { z[i] = Math.exp(z[i] - m); s += z[i]; }
      for (let i = 0; i < z.length; i++) z[i] /= s;
    },
  };
  function dense(L, x) {
    const n = L.n_in, out = new Float64Array(L.n_out);
    const scale = L.dropout && L.dropout_mode === "scale-at-eval" ? f32(1 - L.dropout) : 1;
    for (let j = 0; j < L.n_out; j++) {
      let s = 0;
      const row = j * n;
      for (let i = 0; i < n; i++) s += L.w[row + i] * x[i];
      out[j] = s * scale + L.b[j];
    }
    ACTIVATIONS[L.activation](out);
    return out;
  }
  // z[f, oy, ox] = Σ_c Σ_ky Σ_kx w[f, c, ky, kx] x[c, oy*s + ky - p, ox*s + kx - p] (+ b[f]),
  // one weight at a time over the whole output plane: the inner loop is a plain a*x + y
  function conv(x, [C, H, W], w, bias, F, K, s, p) {
    const OH = Math.floor((H + 2 * p - K) / s) + 1, OW = Math.floor((W + 2 * p - K) / s) + 1;
    const plane = OH * OW, z = new Float64Array(F * plane);
    // the outputs whose window tap k lands inside an input of size n (zero padding outside)
    const first = [], lastY = [], lastX = [];
    for (let k = 0; k < K; k++) {
      first.push(Math.max(0, Math.ceil((p - k) / s)));
      lastY.push(Math.min(OH - 1, Math.floor((H - 1 + p - k) / s)));
      lastX.push(Math.min(OW - 1, Math.floor((W - 1 + p - k) / s)));
    }
    for (let f = 0; f < F; f++) {
      const zf = f * plane;
      if (bias) z.fill(bias[f], zf, zf + plane);
      for (let c = 0; c < C; c++) {
        for (let ky = 0; ky < K; ky++) {
          const oy0 = first[ky], oy1 = lastY[ky];
          for (let kx = 0; kx < K; kx++) {
            const wv = w[((f * C + c) * K + ky) * K + kx];
            const ox0 = first[kx], ox1 = lastX[kx];
            for (let oy = oy0; oy <= oy1; oy++) {
              const xrow = (c * H + oy * s + ky - p) * W + kx - p, zrow = zf + oy * OW;
              if (s === 1) {
                for (let ox = ox0; ox <= ox1; ox++) z[zrow + ox] += wv * x[xrow + ox];
              } else {
                for (let ox = ox0; ox <= ox1; ox++) z[zrow + ox] += wv * x[xrow + ox * s];
              }
            }
          }
        }
      }
    }
    return { z, shape: [F, OH, OW] };
  }
  function maxPool(x, [C, H, W], k, s) {
    const OH = Math.floor((H - k) / s) + 1, OW = Math.floor((W - k) / s) + 1;
    const out = new Float64Array(C * OH * OW);
    for (let c = 0; c < C; c++) {
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          let m = -Infinity;
          for (let ky = 0; ky < k; ky++) {
            for (let kx = 0; kx < k; kx++) m = Math.max(m, x[(c * H + oy * s + ky) * W + ox * s + kx]);
          }
          out[(c * OH + oy) * OW + ox] = m;
        }
      }
    }
    return { z: out, shape: [C, OH, OW] };
  }
  // every layer's output; a ConvPool also gives its convolution σ(conv + b) before pooling
  function forward(input) {
    let a = Float64Array.from(input), shape = MODEL.input_shape.slice();
    const outs = [];
    for (const L of layers) {
      let extra = null;
      if (L.type === "FullyConnected" || L.type === "Softmax") {
        a = dense(L, a); shape = [L.n_out];
      } else if (L.type === "Conv2D") {
        const r = conv(a, shape, L.w, L.b, L.out_channels, L.kernel_size, L.stride, L.padding);
        ACTIVATIONS[L.activation](r.z); a = r.z; shape = r.shape;
      } else if (L.type === "MaxPool") {
        const r = maxPool(a, shape, L.kernel, L.stride); a = r.z; shape = r.shape;
      } else if (L.type === "ConvPool") {
        const r = conv(a, shape, L.w, null, L.out_channels, L.kernel_size, 1, 0);
        const p = maxPool(r.z, r.shape, L.pool, L.pool);
        const [F, OH, OW] = p.shape, n = OH * OW;
        for (let i = 0; i < p.z.length; i++) p.z[i] += L.b[Math.floor(i / n)];
        ACTIVATIONS[L.activation](p.z);
        const cn = r.shape[1] * r.shape[2];
        for (let i = 0; i < r.z.length; i++) r.z[i] += L.b[Math.floor(i / cn)];
        ACTIVATIONS[L.activation](r.z);
        extra = { values: r.z, shape: r.shape };
        a = p.z; shape = [F, OH, OW];
      } else if (L.type === "Flatten") {
        shape = [a.length];
      }
      outs.push({ type: L.type, shape: shape.slice(), values: a, conv: extra });
    }
    return outs;
  }

  // -- colours ------------------------------------------------------------------------------
  const BLUE = [88, 166, 255], RED = [255, 99, 90];
  function signColour(v, max) {  // weight colour: blue positive, red negative, alpha |w|
    const t = Math.min(1, Math.abs(v) / (max || 1)), c = v >= 0 ? BLUE : RED;
    return [c[0], c[1], c[2], t];
  }
  function displayScale(L, values) {  // activations to [0, 1] for shading
    const act = L.activation || "linear";
    if (act === "sigmoid" || act === "softmax" || act === "step") return (v) => v;
    if (act === "tanh") return (v) => (v + 1) / 2;
    let m = 0;
    for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
    return (v) => Math.abs(v) / (m || 1);
  }
  function putGrey(img, offset, v) {
    const g = Math.max(0, Math.min(255, Math.round(v * 255)));
    img.data[offset] = g; img.data[offset + 1] = g; img.data[offset + 2] = g;
    img.data[offset + 3] = 255;
  }

  // -- layout of the network picture ----------------------------------------------------------
  const net = document.getElementById("net"), nctx = net.getContext("2d");
  const TOP = 30, HEIGHT = 480, GAP = 36;
  const columns = [];  // {kind: "grid"|"neurons"|"maps", x, width, ...}
  function neuronColumn(n, label, layerIndex, L) {
    const perCol = Math.max(Math.min(n, 25), Math.ceil(Math.sqrt(2 * n)));
    const cols = Math.ceil(n / perCol), spacing = Math.min(40, HEIGHT / perCol);
    // at least 110 px wide, so that edges between narrow layers have room to be seen
    return { kind: "neurons", n, perCol, cols, spacing, r: Math.min(13, spacing * 0.4),
             width: Math.max(cols * spacing, 110), label, layerIndex, L };
  }
  function mapColumn([C, H, W], label, layerIndex, L, stage) {
    const scale = Math.max(1, Math.floor(32 / Math.max(H, W)));
    const tileH = H * scale + 4, tileW = W * scale + 4;
    const rows = Math.max(1, Math.min(C, Math.floor(HEIGHT / tileH)));
    const cols = Math.ceil(C / rows);
    return { kind: "maps", C, H, W, scale, tileH, tileW, rows, cols, width: cols * tileW,
             label, layerIndex, L, stage };
  }
  const convNet = MODEL.input_shape.length === 3;
  const cell = convNet ? 5 : 8;
  columns.push({ kind: "grid", width: SIDE * cell, cell, label: "input 28×28", layerIndex: -1 });
  layers.forEach((L, i) => {
    const last = i === layers.length - 1;
    if (L.type === "FullyConnected" || L.type === "Softmax") {
      columns.push(neuronColumn(L.n_out, last ? "output" : `${L.n_out} ${L.activation}`, i, L));
    } else if (L.type === "ConvPool") {
      const [, H, W] = shapeBefore(i), K = L.kernel_size;
      columns.push(mapColumn([L.out_channels, H - K + 1, W - K + 1], `conv ${K}×${K}`, i, L,
                             "conv"));
      columns.push(mapColumn(L.output_shape, `pool ${L.pool}×${L.pool}`, i, L, "out"));
    } else if (L.type === "Conv2D" || L.type === "MaxPool") {
      const label = L.type === "Conv2D" ? `conv ${L.kernel_size}×${L.kernel_size}`
        : `max-pool ${L.kernel}×${L.kernel}`;
      columns.push(mapColumn(L.output_shape, label, i, L, "out"));
    }
  });
  let xpos = 10;
  for (const c of columns) { c.x = xpos; xpos += c.width + GAP; }
  const lastColumn = columns[columns.length - 1];
  net.width = xpos + 10;
  net.height = TOP + HEIGHT + 10;

  // centre of item i of a column (a pixel of the grid, a neuron, a pixel of a map)
  function position(c, i) {
    if (c.kind === "grid") {
      const top = TOP + (HEIGHT - SIDE * c.cell) / 2;
      return { x: c.x + (i % SIDE + 0.5) * c.cell, y: top + (Math.floor(i / SIDE) + 0.5) * c.cell };
    }
    if (c.kind === "neurons") {
      const col = Math.floor(i / c.perCol), row = i % c.perCol;
      const inCol = Math.min(c.perCol, c.n - col * c.perCol);
      const top = TOP + (HEIGHT - inCol * c.spacing) / 2;
      const left = c.x + (c.width - c.cols * c.spacing) / 2;
      return { x: left + (col + 0.5) * c.spacing, y: top + (row + 0.5) * c.spacing };
    }
    const per = c.H * c.W, ch = Math.floor(i / per), y = Math.floor((i % per) / c.W);
    const t = tileOrigin(c, ch);
    return { x: t.x + 2 + ((i % per) % c.W + 0.5) * c.scale, y: t.y + 2 + (y + 0.5) * c.scale };
  }
  function tileOrigin(c, ch) {
    const top = TOP + (HEIGHT - Math.min(c.rows, c.C) * c.tileH) / 2;
    return { x: c.x + Math.floor(ch / c.rows) * c.tileW, y: top + (ch % c.rows) * c.tileH };
  }

  // the static part: edges of fully connected layers, strongest first when there are many
  const MAX_EDGES = 600;
  const background = document.createElement("canvas");
  background.width = net.width; background.height = net.height;
  (function drawBackground() {
    const g = background.getContext("2d");
    g.fillStyle = "#101216"; g.fillRect(0, 0, net.width, net.height);
    g.fillStyle = "#9aa4b2"; g.font = "12px system-ui, sans-serif"; g.textAlign = "center";
    for (const c of columns) g.fillText(c.label, c.x + c.width / 2, 18);
    for (let k = 1; k < columns.length; k++) {
      const c = columns[k];
      if (c.kind !== "neurons") continue;
      const L = c.L, prev = columns[k - 1], n = L.n_in;
      const order = [];
      let max = 0;
      for (let i = 0; i < L.w.length; i++) max = Math.max(max, Math.abs(L.w[i]));
      if (L.w.length <= MAX_EDGES) {
        for (let i = 0; i < L.w.length; i++) order.push(i);
      } else {
        const idx = Array.from(L.w.keys()).sort((p, q) => Math.abs(L.w[q]) - Math.abs(L.w[p]));
        for (let i = 0; i < MAX_EDGES; i++) order.push(idx[i]);
        order.reverse();  // strongest drawn last, on top
      }
      for (const e of order) {
        const j = Math.floor(e / n), i = e % n;
        const a = position(prev, i), b = position(c, j), [r, gg, bb, t] = signColour(L.w[e], max);
        g.strokeStyle = `rgba(${r},${gg},${bb},${(0.08 + 0.7 * t).toFixed(3)})`;
        g.lineWidth = 0.5 + 1.5 * t;
        g.beginPath(); g.moveTo(a.x, a.y); g.lineTo(b.x, b.y); g.stroke();
      }
    }
  })();

  // per-stage offscreen canvases for the maps and the input grid (one putImageData each)
  function offscreen(w, h) {
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    return { canvas: c, ctx: c.getContext("2d"), img: c.getContext("2d").createImageData(w, h) };
  }
  for (const c of columns) {
    if (c.kind === "maps") c.off = offscreen(c.W, c.H * c.C);
    if (c.kind === "grid") c.off = offscreen(SIDE, SIDE);
  }

  function drawNetwork(input, outs) {
    nctx.drawImage(background, 0, 0);
    nctx.imageSmoothingEnabled = false;
    for (const c of columns) {
      if (c.kind === "grid") {
        for (let i = 0; i < PIXELS; i++) putGrey(c.off.img, 4 * i, input[i]);
        c.off.ctx.putImageData(c.off.img, 0, 0);
        const p = position(c, 0);
        nctx.drawImage(c.off.canvas, p.x - c.cell / 2, p.y - c.cell / 2, SIDE * c.cell, SIDE * c.cell);
      } else if (c.kind === "maps") {
        const o = outs[c.layerIndex], stage = c.stage === "conv" ? o.conv : o;
        const values = stage.values, scale = displayScale(c.L, values);
        const [C, H, W] = stage.shape, img = c.off.img;
        img.data.fill(0);
        for (let i = 0; i < C * H * W; i++) putGrey(img, 4 * i, scale(values[i]));
        c.off.ctx.putImageData(img, 0, 0);
        for (let ch = 0; ch < C; ch++) {
          const t = tileOrigin(c, ch);
          nctx.drawImage(c.off.canvas, 0, ch * c.H, c.W, c.H, t.x + 2, t.y + 2, W * c.scale, H * c.scale);
        }
      } else {
        const values = outs[c.layerIndex].values, scale = displayScale(c.L, values);
        nctx.lineWidth = 1;
        nctx.strokeStyle = "#6b7280";
        for (let j = 0; j < c.n; j++) {
          const p = position(c, j), g = Math.round(255 * Math.max(0, Math.min(1, scale(values[j]))));
          nctx.fillStyle = `rgb(${g},${g},${g})`;
          nctx.beginPath(); nctx.arc(p.x, p.y, c.r, 0, 2 * Math.PI); nctx.fill();
          if (c.r > 3) nctx.stroke();
        }
        if (selected && selected.layer === c.layerIndex) {  // the neuron in the inspector
          const p = position(c, selected.index);
          nctx.strokeStyle = "#ffd166"; nctx.lineWidth = 2.5;
          nctx.beginPath(); nctx.arc(p.x, p.y, c.r + 3, 0, 2 * Math.PI); nctx.stroke();
        }
        if (c === lastColumn) {
          const best = argmax(values);
          nctx.font = "13px system-ui, sans-serif"; nctx.textAlign = "left";
          for (let j = 0; j < c.n; j++) {
            const p = position(c, j);
            nctx.fillStyle = j === best ? "#ffd166" : "#9aa4b2";
            nctx.fillText(String(j), p.x + c.r + 6, p.y + 4);
          }
        }
      }
    }
  }

  function argmax(v) {
    let best = 0;
    for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
    return best;
  }

  // -- the left panel: what the network sees, the prediction, the bars ------------------------
  const seen = document.getElementById("seen"), sctx = seen.getContext("2d");
  const seenOff = offscreen(SIDE, SIDE);
  const bars = document.getElementById("bars"), bctx = bars.getContext("2d");
  function drawSeen(input) {
    for (let i = 0; i < PIXELS; i++) putGrey(seenOff.img, 4 * i, input[i]);
    seenOff.ctx.putImageData(seenOff.img, 0, 0);
    sctx.imageSmoothingEnabled = false;
    sctx.drawImage(seenOff.canvas, 0, 0, seen.width, seen.height);
  }
  function drawBars(output) {
    const n = output.length, w = bars.width / n, best = argmax(output);
    bctx.fillStyle = "#101216"; bctx.fillRect(0, 0, bars.width, bars.height);
    bctx.font = "12px system-ui, sans-serif"; bctx.textAlign = "center";
    for (let j = 0; j < n; j++) {
      const v = Math.max(0, Math.min(1, output[j])), h = v * (bars.height - 22);
      bctx.fillStyle = j === best ? "#ffd166" : "#58a6ff";
      bctx.fillRect(j * w + 3, bars.height - 18 - h, w - 6, h);
      bctx.fillStyle = "#9aa4b2";
      bctx.fillText(String(j), j * w + w / 2, bars.height - 4);
    }
  }

  // -- drawing pad: strokes, undo, clear -------------------------------------------------------
  const pad = document.getElementById("pad");
  const pctx = pad.getContext("2d", { willReadFrequently: true });
  const LINE = 18;
  let strokes = [], current = null, testImage = null;
  function paintPad() {
    pctx.fillStyle = "#000"; pctx.fillRect(0, 0, pad.width, pad.height);
    if (testImage) {
      const off = offscreen(SIDE, SIDE);
      for (let i = 0; i < PIXELS; i++) putGrey(off.img, 4 * i, testImage.pixels[i]);
      off.ctx.putImageData(off.img, 0, 0);
      pctx.imageSmoothingEnabled = false;
      pctx.drawImage(off.canvas, 0, 0, pad.width, pad.height);
      return;
    }
    pctx.strokeStyle = "#fff"; pctx.lineWidth = LINE; pctx.lineCap = "round";
    pctx.lineJoin = "round";
    for (const s of strokes) {
      pctx.beginPath();
      pctx.moveTo(s[0].x, s[0].y);
      for (const p of s.length > 1 ? s.slice(1) : [s[0]]) pctx.lineTo(p.x, p.y);
      pctx.stroke();
    }
  }
  function padPoint(ev) {
    const r = pad.getBoundingClientRect();
    return { x: (ev.clientX - r.left - pad.clientLeft) * pad.width / pad.clientWidth,
             y: (ev.clientY - r.top - pad.clientTop) * pad.height / pad.clientHeight };
  }
  pad.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    if (testImage) { testImage = null; strokes = []; setInfo("Draw a digit with the mouse or a finger."); }
    current = [padPoint(ev)];
    strokes.push(current);
    paintPad();
    schedule();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!current) return;
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    for (const e of events.length ? events : [ev]) current.push(padPoint(e));
    paintPad();
    schedule();
  });
  const endStroke = () => { current = null; };
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  document.getElementById("clear").addEventListener("click", () => {
    strokes = []; testImage = null; paintPad(); schedule();
  });
  document.getElementById("undo").addEventListener("click", () => {
    if (testImage) testImage = null; else strokes.pop();
    paintPad(); schedule();
  });

  // -- test images -------------------------------------------------------------------------------
  const info = document.getElementById("test-info");
  function setInfo(text) { info.textContent = text; }
  function loadTest(kind, which) {
    if (!tests) return null;
    const pool = [];
    for (let i = 0; i < tests.labels.length; i++) if (tests.wrong[i] === (kind === "wrong")) pool.push(i);
    if (!pool.length) return null;
    const i = which === undefined ? pool[Math.floor(Math.random() * pool.length)] : pool[which % pool.length];
    testImage = { pixels: tests.pixels.slice(i * PIXELS, (i + 1) * PIXELS), label: tests.labels[i],
                  index: tests.index[i], sample: i };
    strokes = [];
    setInfo(`MNIST test image #${testImage.index}: labelled ${testImage.label}` +
            (tests.wrong[i] ? `, which gpunn got wrong (it said ${tests.predicted[i]})` : ""));
    paintPad();
    update();
    return { label: testImage.label, index: testImage.index, sample: i };
  }
  const randomButton = document.getElementById("test-random");
  const wrongButton = document.getElementById("test-wrong");
  randomButton.addEventListener("click", () => loadTest("random"));
  wrongButton.addEventListener("click", () => loadTest("wrong"));
  if (!tests) {
    randomButton.disabled = wrongButton.disabled = true;
    randomButton.title = wrongButton.title = "no MNIST test images came with this model";
  } else if (!tests.wrong.some((x) => x)) {
    wrongButton.disabled = true;
    wrongButton.title = "the network got every test image right";
  }

  // -- the inspector: a neuron's incoming weights as an image ------------------------------------
  const inspect = document.getElementById("inspect"), ictx = inspect.getContext("2d");
  const inspectTitle = document.getElementById("inspect-title");
  function shapeBefore(layerIndex) {
    return layerIndex === 0 ? MODEL.input_shape : layers[layerIndex - 1].output_shape;
  }
  // tiles: C images of H x W, laid out in a near-square grid
  function drawWeights(values, C, H, W) {
    let max = 0;
    for (const v of values) max = Math.max(max, Math.abs(v));
    const per = Math.ceil(Math.sqrt(C)), rows = Math.ceil(C / per);
    const tw = W + 1, th = H + 1, off = offscreen(per * tw, rows * th);
    for (let c = 0; c < C; c++) {
      const ox = (c % per) * tw, oy = Math.floor(c / per) * th;
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const [r, g, b, t] = signColour(values[(c * H + y) * W + x], max);
          const o = 4 * ((oy + y) * off.canvas.width + ox + x);
          off.img.data[o] = r * t; off.img.data[o + 1] = g * t; off.img.data[o + 2] = b * t;
          off.img.data[o + 3] = 255;
        }
      }
    }
    off.ctx.putImageData(off.img, 0, 0);
    const s = Math.min(inspect.width / off.canvas.width, inspect.height / off.canvas.height);
    ictx.fillStyle = "#000"; ictx.fillRect(0, 0, inspect.width, inspect.height);
    ictx.imageSmoothingEnabled = false;
    ictx.drawImage(off.canvas, 0, 0, off.canvas.width * s, off.canvas.height * s);
    return max;
  }
  function inspectNeuron(layerIndex, j) {
    const L = layers[layerIndex];
    if (L.type === "FullyConnected" || L.type === "Softmax") {
      const values = L.w.subarray(j * L.n_in, (j + 1) * L.n_in);
      let shape = shapeBefore(layerIndex);
      if (shape.length === 1) {
        shape = shape[0] === PIXELS ? [1, SIDE, SIDE]
          : [1, Math.ceil(shape[0] / Math.ceil(Math.sqrt(shape[0]))), Math.ceil(Math.sqrt(shape[0]))];
      }
      const padded = new Float32Array(shape[0] * shape[1] * shape[2]);
      padded.set(values);
      const max = drawWeights(padded, shape[0], shape[1], shape[2]);
      inspectTitle.textContent = `layer ${layerIndex + 1}, neuron ${j}: ${L.n_in} incoming ` +
        `weights (largest |w| ${max.toFixed(2)}), bias ${L.b[j].toFixed(2)}`;
    } else {
      const K = L.kernel_size, C = L.in_channels;
      const values = L.w.subarray(j * C * K * K, (j + 1) * C * K * K);
      const max = drawWeights(values, C, K, K);
      inspectTitle.textContent = `layer ${layerIndex + 1}, feature map ${j}: ${C} filter` +
        `${C > 1 ? "s" : ""} ${K}×${K} (largest |w| ${max.toFixed(2)}), bias ${L.b[j].toFixed(2)}`;
    }
    return { layer: layerIndex, index: j };
  }
  function hit(x, y) {
    for (const c of columns) {
      if (x < c.x - 14 || x > c.x + c.width + 14) continue;
      if (c.kind === "neurons") {
        for (let j = 0; j < c.n; j++) {
          const p = position(c, j);
          if ((p.x - x) ** 2 + (p.y - y) ** 2 <= (c.r + 2) ** 2) return { c, j };
        }
      } else if (c.kind === "maps" && c.L.w) {
        for (let ch = 0; ch < c.C; ch++) {
          const t = tileOrigin(c, ch);
          if (x >= t.x && x < t.x + c.tileW && y >= t.y && y < t.y + c.tileH) return { c, j: ch };
        }
      }
    }
    return null;
  }
  net.addEventListener("click", (ev) => {
    const r = net.getBoundingClientRect();
    const h = hit((ev.clientX - r.left) * net.width / r.width, (ev.clientY - r.top) * net.height / r.height);
    if (h) { selected = inspectNeuron(h.c.layerIndex, h.j); update(); }
  });

  // -- one redraw: preprocess, forward, draw -----------------------------------------------------
  const digit = document.getElementById("digit"), confidence = document.getElementById("confidence");
  const timing = document.getElementById("timing");
  let state = null, pending = false, selected = null;
  function currentInput() {
    if (testImage) return testImage.pixels;
    if (!strokes.length) return null;
    return preprocess(pctx.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height);
  }
  let phases = null;  // milliseconds of the last redraw: preprocess, forward, draw
  // flush: read a pixel of each canvas, so the timing includes the drawing itself and not
  // only the recording of canvas commands (the benchmark asks for it)
  function update(flush = false) {
    pending = false;
    const t0 = performance.now();
    const input = currentInput() || new Float32Array(PIXELS);
    const t1 = performance.now();
    const outs = forward(input);
    const t2 = performance.now();
    const output = outs[outs.length - 1].values;
    drawSeen(input);
    drawNetwork(input, outs);
    drawBars(output);
    const drawn = Boolean(testImage || strokes.length) && input.some((v) => v > 0);
    const best = argmax(output);
    digit.textContent = drawn ? String(best) : "–";
    confidence.textContent = drawn ? `${(100 * output[best]).toFixed(1)}% sure` : "draw a digit";
    state = { input, outs, prediction: drawn ? best : null, confidence: output[best] };
    if (flush) for (const g of [nctx, sctx, bctx]) g.getImageData(0, 0, 1, 1);
    const t3 = performance.now(), ms = t3 - t0;
    phases = { preprocess: t1 - t0, forward: t2 - t1, draw: t3 - t2, total: ms };
    timing.textContent = `redraw (preprocess, forward pass, drawing): ${ms.toFixed(1)} ms`;
    checkWithGpunn(input, outs);
    return ms;
  }
  function schedule() {
    if (!pending) { pending = true; requestAnimationFrame(update); }
  }

  // when served by `gpunn serve`, compare with gpunn's own forward pass now and then
  const check = document.getElementById("check");
  let checkTimer = null;
  function checkWithGpunn(input, outs) {
    if (!location.protocol.startsWith("http")) return;
    clearTimeout(checkTimer);
    checkTimer = setTimeout(async () => {
      try {
        const res = await fetch("api/forward", { method: "POST", headers: { "Content-Type": "application/json" },
                                                 body: JSON.stringify({ pixels: Array.from(input) }) });
        const body = await res.json();
        if (!res.ok) { check.textContent = `gpunn: ${body.error}`; return; }
        let worst = 0;
        body.layers.forEach((L, i) => L.values.forEach((v, k) => {
          worst = Math.max(worst, Math.abs(v - outs[i].values[k]));
        }));
        check.textContent = `gpunn's forward pass agrees: largest difference ${worst.toExponential(1)}`;
      } catch (err) {
        check.textContent = "";
      }
    }, 250);
  }

  document.getElementById("model-name").textContent = MODEL.name;
  paintPad();
  update();
  const firstWeighted = layers.findIndex((L) => L.w && L.type !== "Softmax");
  if (firstWeighted >= 0) { selected = inspectNeuron(firstWeighted, 0); update(); }

  // -- for the tests and the benchmark ------------------------------------------------------------
  window.gpunn = {
    state() {
      return { input: Array.from(state.input), prediction: state.prediction,
               confidence: state.confidence,
               layers: state.outs.map((o) => ({ type: o.type, shape: o.shape, values: Array.from(o.values),
                                                conv: o.conv ? { shape: o.conv.shape, values: Array.from(o.conv.values) } : null })) };
    },
    preprocessPad() {
      const v = preprocess(pctx.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height);
      return v && Array.from(v);
    },
    loadTest,
    inspectNeuron,
    selected: () => selected,
    neuronCentre(layerIndex, j) {  // client coordinates of neuron j of a layer (or map j)
      const c = columns.find((col) => col.layerIndex === layerIndex && col.stage !== "conv");
      const p = c.kind === "maps" ? (({ x, y }) => ({ x: x + c.tileW / 2, y: y + c.tileH / 2 }))(tileOrigin(c, j))
        : position(c, j);
      const r = net.getBoundingClientRect();
      return { x: r.left + p.x * r.width / net.width, y: r.top + p.y * r.height / net.height };
    },
    // n full redraws of what is on the pad, after `warmup` more: each phase's median and
    // the total's median, 95th percentile and maximum, in milliseconds
    benchmark(n, warmup = 10) {
      for (let i = 0; i < warmup; i++) update(true);
      const runs = [];
      for (let i = 0; i < n; i++) { update(true); runs.push(phases); }
      const q = (key, f) => {
        const v = runs.map((r) => r[key]).sort((a, b) => a - b);
        return v[Math.min(n - 1, Math.floor(f * n))];
      };
      return { n, median: q("total", 0.5), p95: q("total", 0.95), max: q("total", 1),
               preprocess: q("preprocess", 0.5), forward: q("forward", 0.5), draw: q("draw", 0.5) };
    },
  };
})();

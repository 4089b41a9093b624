// Widgets for node inputs declared in /object_info: INT, FLOAT, STRING (single and multi-line),
// BOOLEAN, combo lists, seeds' control_after_generate, and the image-upload button.

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";

export const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];
export const CONTROL_SUFFIX = "control_after_generate";
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
// Seeds past 2^50 lose integer precision in JavaScript numbers; randomize stays below it.
const RANDOM_SEED_MAX = 1125899906842624;

/** {kind, config, values} for an input spec `[type, config]`, or null when the input is a socket only. */
export function widgetKindOf(spec) {
  if (!Array.isArray(spec) || spec.length === 0) return null;
  const [type, rawConfig] = spec;
  const config = rawConfig && typeof rawConfig === "object" ? rawConfig : {};
  if (Array.isArray(type)) return { kind: "COMBO", config, values: type };
  if (type === "COMBO") return { kind: "COMBO", config, values: Array.isArray(config.options) ? config.options : [] };
  if (typeof type === "string" && WIDGET_TYPES.has(type)) return { kind: type, config, values: null };
  return null;
}

/** The socket type of an input spec: combos are "COMBO", everything else its declared type. */
export function socketTypeOf(spec) {
  const type = Array.isArray(spec) ? spec[0] : spec;
  return Array.isArray(type) ? "COMBO" : String(type);
}

function decimalsOf(number) {
  if (!Number.isFinite(number) || number <= 0) return 0;
  const text = String(number);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

/** Snap a number to the widget's step grid (counted from its min) and clamp it to [min, max]. */
export function snapNumber(value, { min, max, step, integer, precision }) {
  let v = Number(value);
  if (!Number.isFinite(v)) return min ?? 0;
  if (step && step > 0) {
    const origin = Number.isFinite(min) ? min : 0;
    v = origin + Math.round((v - origin) / step) * step;
  }
  if (Number.isFinite(min) && v < min) v = min;
  if (Number.isFinite(max) && v > max) v = max;
  if (integer) return Math.round(v);
  return Number(v.toFixed(precision ?? 3));
}

function numberOptions(kind, config) {
  const integer = kind === "INT";
  const step = Number(config.step ?? (integer ? 1 : 0.1)) || (integer ? 1 : 0.1);
  const round = typeof config.round === "number" && config.round > 0 ? config.round : null;
  const precision = integer ? 0 : Math.min(10, decimalsOf(round ?? step) || 1);
  const min = Number.isFinite(config.min) ? config.min : (integer ? -Number.MAX_SAFE_INTEGER : -Infinity);
  const max = Number.isFinite(config.max) ? Math.min(config.max, Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER;
  return { min, max, step2: step, precision, integer, round: round ?? step };
}

function defaultOf(kind, config, values) {
  if (config.default !== undefined) return config.default;
  if (kind === "COMBO") return values?.[0] ?? "";
  if (kind === "INT" || kind === "FLOAT") return Number.isFinite(config.min) ? config.min : 0;
  if (kind === "BOOLEAN") return false;
  return "";
}

/** Split text into lines that fit `width` on `ctx` (breaking at spaces, and inside words too long for a line). */
export function wrapLines(ctx, text, width) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (let word of paragraph.split(" ")) {
      while (ctx.measureText(word).width > width && word.length > 1) {
        let cut = word.length - 1;
        while (cut > 1 && ctx.measureText(word.slice(0, cut)).width > width) cut--;
        if (line) lines.push(line);
        lines.push(word.slice(0, cut));
        line = "";
        word = word.slice(cut);
      }
      const candidate = line ? `${line} ${word}` : word;
      if (ctx.measureText(candidate).width > width && line) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

/** A multi-line text box drawn on the canvas; clicking it opens a textarea over it (see app.editText). */
function addMultilineWidget(node, name, value, hooks) {
  const widget = {
    type: "multiline",
    name,
    value,
    options: { multiline: true },
    y: 0,
    computeLayoutSize() {
      return { minHeight: 64, maxHeight: 400, minWidth: 220 };
    },
    draw(ctx, owner, width, y) {
      const height = (this.computedHeight ?? 68) - 4;
      const margin = 15;
      ctx.save();
      ctx.fillStyle = LiteGraph.WIDGET_BGCOLOR;
      ctx.strokeStyle = LiteGraph.WIDGET_OUTLINE_COLOR;
      ctx.beginPath();
      ctx.roundRect(margin, y, width - margin * 2, height, 6);
      ctx.fill();
      ctx.stroke();
      ctx.clip();
      ctx.font = "12px Arial";
      ctx.fillStyle = this.value ? LiteGraph.WIDGET_TEXT_COLOR : LiteGraph.WIDGET_SECONDARY_TEXT_COLOR;
      const shown = this.value || this.name;
      const lines = wrapLines(ctx, shown, width - margin * 2 - 12);
      lines.slice(0, Math.floor((height - 6) / 15)).forEach((line, i) => {
        ctx.fillText(line, margin + 6, y + 16 + i * 15);
      });
      ctx.restore();
    },
    onPointerDown(pointer, owner) {
      if (this.computedDisabled) return true;
      pointer.onClick = () => hooks.editText(owner, this);
      return true;
    },
  };
  node.addCustomWidget(widget);
  return widget;
}

/** Add the widget (and, for seeds, its control widget) for one input; returns the value widget. */
export function addInputWidget(node, name, spec, hooks) {
  const found = widgetKindOf(spec);
  if (!found) return null;
  const { kind, config, values } = found;
  const value = defaultOf(kind, config, values);
  const tooltip = config.tooltip;
  let widget;
  if (kind === "INT" || kind === "FLOAT") {
    const options = numberOptions(kind, config);
    widget = node.addWidget("number", name, snapNumber(value, { ...options, step: null }), function (v) {
      const snapped = snapNumber(v, { ...options, step: options.integer ? options.step2 : options.round });
      if (snapped !== this.value) this.value = snapped;
    }, options);
  } else if (kind === "STRING") {
    widget = config.multiline
      ? addMultilineWidget(node, name, String(value), hooks)
      : node.addWidget("text", name, String(value), () => {}, {});
  } else if (kind === "BOOLEAN") {
    widget = node.addWidget("toggle", name, Boolean(value), () => {}, {
      on: config.label_on ?? "true", off: config.label_off ?? "false",
    });
  } else {
    widget = node.addWidget("combo", name, value, () => {}, { values: [...values] });
    if (config.image_upload || config.mask_upload) {
      widget.options.upload = config.image_upload ? "image" : "mask";
    }
  }
  if (tooltip) widget.tooltip = tooltip;
  if (config.control_after_generate && (kind === "INT" || kind === "COMBO")) {
    addControlWidget(node, widget);
  }
  return widget;
}

/** The combo that changes `target` after each queued run, as ComfyUI's editor does. */
export function addControlWidget(node, target) {
  const existing = (node.widgets ?? []).filter((w) => w.controls);
  const name = existing.length === 0 ? CONTROL_SUFFIX : `${target.name}_${CONTROL_SUFFIX}`;
  const control = node.addWidget("combo", name, "randomize", () => {}, { values: CONTROL_MODES });
  control.controls = target.name;
  control.socketless = true;
  target.linkedWidgets = [control];
  return control;
}

/** Apply every control widget of `node` (after a prompt was queued with the current values). */
export function applyControlWidgets(node) {
  for (const control of node.widgets ?? []) {
    if (!control.controls) continue;
    const target = node.widgets.find((w) => w.name === control.controls);
    if (!target || control.value === "fixed") continue;
    const linked = node.inputs?.find((i) => i.widget?.name === target.name)?.link != null;
    if (linked) continue;
    if (target.type === "combo") {
      const list = target.options.values;
      const index = list.indexOf(target.value);
      const next = {
        increment: Math.min(list.length - 1, index + 1),
        decrement: Math.max(0, index - 1),
        randomize: Math.floor(Math.random() * list.length),
      }[control.value];
      if (next !== undefined && list.length) target.value = list[next];
      continue;
    }
    const { min, max, step2 } = target.options;
    const step = step2 || 1;
    const low = Number.isFinite(min) ? Math.max(min, 0) : 0;
    const high = Math.min(Number.isFinite(max) ? max : RANDOM_SEED_MAX, RANDOM_SEED_MAX);
    let v = target.value;
    if (control.value === "increment") v += step;
    else if (control.value === "decrement") v -= step;
    else if (control.value === "randomize") v = low + Math.floor(Math.random() * ((high - low) / step + 1)) * step;
    target.value = Math.min(Math.max(v, Number.isFinite(min) ? min : v), Number.isFinite(max) ? max : v);
  }
}

// Workflow formats: recognise UI (0.4 and 1) and API files, build a graph from an API prompt,
// ComfyUI's default txt2img graph, and the saved form (UI 0.4 with widget values keyed by input name).

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { applyWidgetValues } from "./nodes.js";

/** "ui", "api" or null for anything else. */
export function workflowKind(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return null;
  if (Array.isArray(data.nodes)) return "ui";
  const entries = Object.values(data);
  if (entries.length > 0 && entries.every((n) => n && typeof n === "object" && typeof n.class_type === "string")) {
    return "api";
  }
  return null;
}

/** The workflow of a parsed JSON file: a UI graph, an API prompt, or a wrapper holding one. */
export function unwrapWorkflow(data) {
  if (workflowKind(data)) return data;
  for (const key of ["workflow", "prompt"]) {
    const inner = typeof data?.[key] === "string" ? JSON.parse(data[key]) : data?.[key];
    if (workflowKind(inner)) return inner;
  }
  throw new Error("this file holds neither a UI workflow (with 'nodes') nor an API prompt ({id: {class_type, inputs}})");
}

/** The saved form of a graph: ComfyUI's UI format 0.4; widget values are dicts (see nodes.js). */
export function serializeGraph(graph) {
  graph.updateExecutionOrder(); // `order` is otherwise stale until litegraph next recomputes it
  const data = graph.serialize({ sortNodes: true });
  for (const key of Object.keys(data)) if (data[key] === undefined) delete data[key];
  data.extra = { ...(data.extra ?? {}), diffloom: { widgets_values: "by_input_name" } };
  return data;
}

const isLink = (v) => Array.isArray(v) && v.length === 2 && (typeof v[0] === "string" || typeof v[0] === "number")
  && Number.isInteger(v[1]);

function numericIds(prompt) {
  const ids = new Map();
  let next = 1 + Math.max(0, ...Object.keys(prompt).map(Number).filter(Number.isInteger));
  for (const id of Object.keys(prompt)) {
    const n = Number(id);
    ids.set(id, Number.isInteger(n) && n > 0 ? n : next++);
  }
  return ids;
}

/** Column of each node: its longest distance from a node without linked inputs. */
function depths(prompt) {
  const memo = new Map();
  const visit = (id, stack) => {
    if (memo.has(id)) return memo.get(id);
    if (stack.has(id)) return 0; // a cycle; validation reports it, layout just stops
    stack.add(id);
    let depth = 0;
    for (const value of Object.values(prompt[id]?.inputs ?? {})) {
      if (isLink(value) && prompt[String(value[0])]) depth = Math.max(depth, visit(String(value[0]), stack) + 1);
    }
    stack.delete(id);
    memo.set(id, depth);
    return depth;
  };
  for (const id of Object.keys(prompt)) visit(id, new Set());
  return memo;
}

/**
 * Fill `graph` with the nodes of an API prompt, laid out in columns by depth.
 * `layout` may fix a node's place and least size ({id: [x, y, width, height]}).
 * Returns the ids whose class the server lacks.
 */
export function loadApiPrompt(graph, prompt, layout = {}) {
  graph.clear();
  const ids = numericIds(prompt);
  const columns = depths(prompt);
  const nodes = new Map();
  const missing = [];
  const columnY = new Map();
  const columnWidth = new Map();
  for (const [id, entry] of Object.entries(prompt)) {
    const node = LiteGraph.createNode(entry.class_type);
    if (!node) {
      missing.push(`${id} (${entry.class_type})`);
      continue;
    }
    node.id = ids.get(id);
    if (entry._meta?.title && entry._meta.title !== node.title) node.title = entry._meta.title;
    const literals = {};
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (!isLink(value)) literals[name] = value?.__value__ ?? value;
    }
    applyWidgetValues(node, literals);
    const place = layout[id];
    if (place) {
      node.pos = [place[0], place[1]];
      node.setSize([Math.max(node.size[0], place[2]), Math.max(node.size[1], place[3])]);
    }
    const column = columns.get(id) ?? 0;
    columnWidth.set(column, Math.max(columnWidth.get(column) ?? 0, node.size[0]));
    graph.add(node);
    nodes.set(id, node);
  }
  // columns left to right by depth, each as wide as its widest node; nodes stacked top-down in file order
  const columnX = new Map();
  let x = 60;
  for (const column of [...columnWidth.keys()].sort((a, b) => a - b)) {
    columnX.set(column, x);
    x += columnWidth.get(column) + 80;
  }
  for (const [id, node] of nodes) {
    if (layout[id]) continue;
    const column = columns.get(id) ?? 0;
    const y = columnY.get(column) ?? 80;
    node.pos = [columnX.get(column), y];
    columnY.set(column, y + node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 40);
  }
  for (const [id, entry] of Object.entries(prompt)) {
    const target = nodes.get(id);
    if (!target) continue;
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (!isLink(value)) continue;
      const source = nodes.get(String(value[0]));
      const slot = target.findInputSlot(name);
      if (source && slot >= 0) source.connect(value[1], target, slot);
    }
  }
  return missing;
}

/** ComfyUI's default txt2img graph in API form, with `checkpoint` in its loader and a model's own hints. */
export function defaultPrompt(checkpoint, { width = 512, height = 512, text } = {}) {
  return {
    4: { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: checkpoint } },
    6: { class_type: "CLIPTextEncode", inputs: { text: text ?? "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,", clip: ["4", 1] } },
    7: { class_type: "CLIPTextEncode", inputs: { text: "text, watermark", clip: ["4", 1] } },
    5: { class_type: "EmptyLatentImage", inputs: { width, height, batch_size: 1 } },
    3: {
      class_type: "KSampler",
      inputs: {
        seed: 156680208700286, steps: 20, cfg: 8, sampler_name: "euler", scheduler: "normal", denoise: 1,
        model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0],
      },
    },
    8: { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    9: { class_type: "SaveImage", inputs: { filename_prefix: "ComfyUI", images: ["8", 0] } },
  };
}

/**
 * What a checkpoint's safetensors metadata says about using it: ModelSpec's `modelspec.resolution`
 * ("1024x1024") for the latent size, and diffloom's `diffloom.example_prompt` for the prompt.
 */
export function modelHints(metadata) {
  const hints = {};
  const size = /^\s*(\d+)\s*x\s*(\d+)\s*$/.exec(metadata?.["modelspec.resolution"] ?? "");
  if (size) {
    const [width, height] = [Number(size[1]), Number(size[2])];
    // Only sizes EmptyLatentImage accepts: multiples of 8 within its range.
    if (width % 8 === 0 && height % 8 === 0 && width >= 16 && height >= 16 && width <= 16384 && height <= 16384) {
      Object.assign(hints, { width, height });
    }
  }
  const text = metadata?.["diffloom.example_prompt"];
  if (typeof text === "string" && text.trim()) hints.text = text;
  return hints;
}

/** Where the default graph's nodes sit: [x, y, min width, min height]. */
export const DEFAULT_LAYOUT = {
  4: [30, 330, 315, 0], 6: [410, 100, 420, 200], 7: [410, 360, 420, 200], 5: [470, 620, 315, 0],
  3: [880, 180, 315, 0], 8: [1240, 180, 210, 0], 9: [1490, 180, 420, 460],
};

/** First checkpoint the server lists for CheckpointLoaderSimple, or null. */
export function firstCheckpoint(objectInfo) {
  const spec = objectInfo?.CheckpointLoaderSimple?.input?.required?.ckpt_name;
  if (!spec) return null;
  const values = Array.isArray(spec[0]) ? spec[0] : spec[1]?.options;
  return values?.[0] ?? null;
}

/** Download `data` as a JSON file named `filename`. */
export function downloadJson(data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

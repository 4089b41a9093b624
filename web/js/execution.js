// What a run looks like on the canvas: the executing node outlined, sampler progress, live
// previews, output images on their nodes, cached nodes marked, and errors on the nodes and inputs
// they concern. Fed by the websocket events and by the answer of POST /prompt.

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { el, toast } from "./ui.js";
import { wrapLines } from "./widgets.js";

const EXECUTING_COLOR = "#3c3";
const ERROR_COLOR = "#e33";

/** Messages of one validation error, naming the input when there is one. */
function describeError(error) {
  const input = error.extra_info?.input_name;
  // ComfyUI's details are often just the input name; ours are a sentence that says it all
  const said = error.details && error.details !== input ? error.details : error.message;
  const prefix = input && !said.includes(`'${input}'`) ? `${input}: ` : "";
  return { input, text: `${prefix}${said}` };
}

export class ExecutionView {
  constructor(app) {
    this.app = app;
    this.api = app.api;
    this.promptId = null;
    this.executing = null; // node id (string) running now
    this.cached = new Set();
    this.errors = new Map(); // node id -> [{input, text}]
    this.outputs = new Map(); // node id -> [image refs]
    this.previewUrl = null;
    this.progress = null; // {value, max, node}
    const on = (type, handler) => this.api.addEventListener(type, (e) => handler.call(this, e.detail));
    on("execution_start", this.onStart);
    on("execution_cached", this.onCached);
    on("executing", this.onExecuting);
    on("progress", this.onProgress);
    on("executed", this.onExecuted);
    on("execution_success", this.onFinished);
    on("execution_error", this.onError);
    on("execution_interrupted", this.onInterrupted);
    on("preview", this.onPreview);
  }

  node(id) {
    return id == null ? null : this.app.graph.getNodeById(Number(id)) ?? this.app.graph.getNodeById(id);
  }

  redraw() {
    this.app.canvas.setDirty(true, true);
  }

  /** Remove all error marks (before a new queue attempt or a new workflow). */
  clearErrors() {
    this.errors.clear();
    for (const node of this.app.graph.nodes) {
      node.has_errors = false;
      for (const input of node.inputs ?? []) input.hasErrors = false;
    }
    this.app.errorPanel.clear();
    this.redraw();
  }

  /** Show the node_errors of a POST /prompt answer on their nodes and in the error panel. */
  showValidationErrors(nodeErrors, topError) {
    const lines = [];
    for (const [id, entry] of Object.entries(nodeErrors ?? {})) {
      const node = this.node(id);
      const described = (entry.errors ?? []).map(describeError);
      this.errors.set(String(id), described);
      if (node) {
        node.has_errors = true;
        for (const { input } of described) {
          const slot = node.inputs?.find((i) => i.name === input);
          if (slot) slot.hasErrors = true;
        }
      }
      const title = node ? node.title : entry.class_type;
      for (const { text } of described) lines.push({ id, label: `${title} #${id}`, text });
    }
    if (topError && !lines.length) lines.push({ id: null, label: topError.message ?? "Error", text: topError.details ?? "" });
    this.app.errorPanel.show("The prompt failed validation", lines);
    this.redraw();
  }

  onStart({ prompt_id }) {
    this.promptId = prompt_id;
    this.cached.clear();
    this.progress = null;
    this.app.setProgress(null);
    this.redraw();
  }

  onCached({ nodes }) {
    for (const id of nodes ?? []) this.cached.add(String(id));
    this.redraw();
  }

  onExecuting({ node }) {
    const previous = this.node(this.executing);
    if (previous) previous.progress = undefined;
    this.executing = node == null ? null : String(node);
    if (node == null) {
      this.app.setProgress(null);
      this.app.queuePanels.refresh();
    } else {
      this.cached.delete(this.executing);
      const running = this.node(node);
      this.app.setProgress({ value: 0, max: 1, label: running ? running.title : `node ${node}` });
    }
    this.redraw();
  }

  onProgress({ value, max, node }) {
    const target = this.node(node ?? this.executing);
    if (target) target.progress = max ? value / max : 0;
    this.progress = { value, max, node };
    this.app.setProgress({ value, max, label: `${target ? target.title : "step"} ${value}/${max}` });
    this.redraw();
  }

  onPreview({ blob, metadata }) {
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = URL.createObjectURL(blob);
    const node = this.node(metadata?.display_node_id ?? metadata?.node_id ?? this.executing);
    if (node) this.app.images.set(node, [this.previewUrl]);
    this.app.showLivePreview(this.previewUrl);
  }

  onExecuted({ node, output }) {
    const target = this.node(node);
    // ComfyUI's hook: extensions put it on node prototypes to show what a node returned
    if (typeof target?.onExecuted === "function") {
      try {
        target.onExecuted(output ?? {});
      } catch (error) {
        this.app.extensions.failFromError(`onExecuted of ${target.type} node ${node}`, error);
      }
    }
    const images = output?.images ?? [];
    if (!images.length) return;
    this.outputs.set(String(node), images);
    if (target) this.app.images.set(target, images.map((image) => this.api.viewUrl(image)));
    this.app.queuePanels.addToGallery(images);
  }

  onFinished() {
    this.executing = null;
    this.app.setProgress(null);
    this.app.hideLivePreview();
    this.app.queuePanels.refresh();
    this.redraw();
  }

  onError(data) {
    const id = String(data.node_id);
    const node = this.node(id);
    const message = `${data.exception_type ?? "Error"}: ${data.exception_message ?? ""}`.trim();
    this.errors.set(id, [{ input: null, text: message }]);
    if (node) node.has_errors = true;
    const label = `${node?.title ?? data.node_type} #${id}`;
    this.app.errorPanel.show("The prompt failed while running", [{ id, label, text: message }],
      (data.traceback ?? []).join(""));
    this.onFinished();
  }

  onInterrupted() {
    toast("Prompt interrupted", "info");
    this.onFinished();
  }

  /** Extra drawing on top of a node: outline while running, error text, cached mark. */
  drawForeground(node, ctx) {
    const id = String(node.id);
    const [width, height] = node.size;
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    if (node.mode === 2 || node.mode === 4) {
      // the colours say it (nodes.js); the word says it to those who do not know the colours
      ctx.save();
      ctx.fillStyle = node.mode === 2 ? "#999" : "#d9a5e0";
      ctx.font = "11px Arial";
      ctx.fillText(node.mode === 2 ? "muted" : "bypassed", 8, -title - 6);
      ctx.restore();
    }
    if (this.executing === id) {
      ctx.save();
      ctx.strokeStyle = EXECUTING_COLOR;
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.roundRect(-4, -title - 4, width + 8, height + title + 8, 10);
      ctx.stroke();
      ctx.restore();
    }
    if (this.cached.has(id)) {
      ctx.save();
      ctx.font = "11px Arial";
      const label = "cached";
      const w = ctx.measureText(label).width + 12;
      ctx.fillStyle = "#2a4d6e";
      ctx.beginPath();
      ctx.roundRect(width - w - 8, -title + 7, w, 16, 8);
      ctx.fill();
      ctx.fillStyle = "#cde";
      ctx.fillText(label, width - w - 2, -title + 19);
      ctx.restore();
    }
    if (!node.flags?.collapsed) this.drawMissingValues(node, ctx);
    const errors = this.errors.get(id);
    if (errors?.length) this.drawErrors(node, ctx, errors);
  }

  /** Combo values the server does not offer (a model or image missing here) get a red outline and a note. */
  drawMissingValues(node, ctx) {
    for (const widget of node.widgets ?? []) {
      if (!widget.options?.missing?.has(widget.value)) continue;
      ctx.save();
      ctx.strokeStyle = ERROR_COLOR;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.roundRect(15, widget.y, node.size[0] - 30, LiteGraph.NODE_WIDGET_HEIGHT, 10);
      ctx.stroke();
      if (widget.options.upload) {
        ctx.fillStyle = "#e88";
        ctx.font = "12px Arial";
        ctx.fillText(`not found on the server: ${widget.value}`, 15, this.app.images.contentBottom(node) + 16,
          node.size[0] - 30);
      }
      ctx.restore();
    }
  }

  drawErrors(node, ctx, errors) {
    const [width, height] = node.size;
    ctx.save();
    for (const { input } of errors) {
      const widget = node.widgets?.find((w) => w.name === input);
      if (widget && !node.flags?.collapsed) {
        ctx.strokeStyle = ERROR_COLOR;
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.roundRect(10, widget.y - 2, width - 20, (widget.computedHeight ?? 24) - 0, 8);
        ctx.stroke();
      }
    }
    ctx.font = "12px Arial";
    const boxWidth = Math.max(width, 360);
    let lines = errors.flatMap((e) => wrapLines(ctx, e.text, boxWidth - 16));
    if (lines.length > 8) lines = [...lines.slice(0, 7), "… (see the error list)"];
    const top = node.flags?.collapsed ? 8 : height + 8;
    ctx.fillStyle = "rgba(90, 10, 10, 0.94)";
    ctx.beginPath();
    ctx.roundRect(0, top, boxWidth, lines.length * 16 + 8, 6);
    ctx.fill();
    ctx.fillStyle = "#fdd";
    lines.forEach((line, i) => ctx.fillText(line, 8, top + 17 + i * 16));
    ctx.restore();
  }
}

/** The list of validation or execution errors under the toolbar, each one jumping to its node. */
export class ErrorPanel {
  constructor(app, element) {
    this.app = app;
    this.element = element;
  }

  clear() {
    this.element.hidden = true;
    this.element.replaceChildren();
  }

  show(title, lines, details = "") {
    const items = lines.map(({ id, label, text }) => el("li", {}, [
      id != null
        ? el("button.link", { onclick: () => this.app.focusNode(id), title: "Show this node" }, [label])
        : el("strong", { text: label }),
      el("span", { text: ` ${text}` }),
    ]));
    const parts = [
      el("header", {}, [el("strong", { text: title }),
        el("button.close", { title: "Dismiss", onclick: () => this.clear() }, ["×"])]),
      el("ul", {}, items),
    ];
    if (details) parts.push(el("details", {}, [el("summary", { text: "Traceback" }), el("pre", { text: details })]));
    this.element.replaceChildren(...parts);
    this.element.hidden = false;
  }
}

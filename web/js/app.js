// The editor: canvas, toolbar, files, queueing, and the glue between the other modules.

import { LGraph, LGraphCanvas, LGraphGroup, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { Api, ApiError } from "./api.js";
import { bindEditor, extensionHost } from "./compat.js";
import { ErrorPanel, ExecutionView } from "./execution.js";
import { WorkflowFiles } from "./files.js";
import { NodeImages } from "./nodeimages.js";
import { registerNodeTypes } from "./nodes.js";
import { PluginPanels } from "./plugins.js";
import { QueuePanels } from "./queue.js";
import { el, showDialog, toast } from "./ui.js";
import { ChangeTracker } from "./undo.js";
import { applyControlWidgets } from "./widgets.js";
import {
  DEFAULT_LAYOUT, defaultPrompt, firstCheckpoint, modelHints, loadApiPrompt, serializeGraph, unwrapWorkflow, workflowKind,
} from "./workflow.js";

const SESSION_KEY = "diffloom.workflow";
const MIN_FIT_SCALE = 0.5; // below this litegraph draws nodes without text
const NODE_MODES = { Always: 0, "Mute (never run)": 2, "Bypass (pass inputs through)": 4 };

export class App {
  constructor() {
    this.api = new Api();
    this.objectInfo = {};
    this.workflowName = "Unsaved workflow";
    this.images = new NodeImages(this);
    this.files = new WorkflowFiles(this);
    this.extensions = extensionHost;
    bindEditor(this);
  }

  async start() {
    this.setupCanvas();
    this.errorPanel = new ErrorPanel(this, document.getElementById("errors"));
    this.execution = new ExecutionView(this);
    this.queuePanels = new QueuePanels(this, {
      queueList: document.getElementById("queue-list"),
      historyList: document.getElementById("history-list"),
      gallery: document.getElementById("gallery"),
      queueBadge: document.getElementById("queue-count"),
    });
    this.plugins = new PluginPanels(this, {
      panel: document.getElementById("plugin-list"),
      notice: document.getElementById("plugin-notice"),
      badge: document.getElementById("plugin-problems"),
      tab: document.getElementById("tab-plugins"),
    });
    this.tracker = new ChangeTracker(() => this.snapshot(), (state) => this.restore(state), () => this.onModified());
    this.bindToolbar();
    this.bindKeys();
    this.files.bindDrops();
    this.bindSidebar();
    this.api.addEventListener("status", () => this.queuePanels.refresh());
    this.api.addEventListener("connected", () => this.setConnection(true));
    this.api.addEventListener("disconnected", () => this.setConnection(false));
    const report = this.plugins.fetchReport();
    await this.loadExtensions();
    await this.extensions.invoke("init");
    await this.loadNodeDefinitions();
    this.api.connect();
    const saved = sessionStorage.getItem(SESSION_KEY);
    if (saved) {
      try {
        const { name, workflow } = JSON.parse(saved);
        this.loadUiWorkflow(workflow, name);
      } catch (error) {
        console.warn("could not restore the last session:", error.message);
        await this.loadDefault();
      }
    } else {
      await this.loadDefault();
    }
    this.queuePanels.refresh();
    this.files.refreshList();
    await this.extensions.invoke("setup");
    await report;
    this.plugins.render();
    this.extensions.onFailure = () => this.plugins.renderSoon(); // an extension may still fail later
    document.body.dataset.ready = "true";
  }

  /** Import the plugins' browser extensions (/extensions); a broken one is reported, never fatal. */
  async loadExtensions() {
    let urls = [];
    try {
      urls = await this.api.extensionUrls();
    } catch (error) {
      console.warn("diffloom: the server did not list its browser extensions:", error.message);
    }
    if (Array.isArray(urls) && urls.length) await this.extensions.load(urls.filter((u) => typeof u === "string"));
  }

  // ---------------------------------------------------------------- canvas

  setupCanvas() {
    Object.assign(LiteGraph, {
      release_link_on_empty_shows_menu: true,
      search_hide_on_mouse_leave: false,
      alt_drag_do_clone_nodes: true,
      middle_click_slot_add_default_node: false,
      ctrl_shift_v_paste_connect_unselected_outputs: true,
      snaps_for_comfy: true,
    });
    LiteGraph.saveViewportWithGraph = true;
    const element = document.getElementById("graph-canvas");
    this.canvasElement = element;
    this.graph = new LGraph();
    this.canvas = new LGraphCanvas(element, this.graph);
    this.canvas.allow_searchbox = true;
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    this.canvas.low_quality_zoom_threshold = 0.45; // a little under MIN_FIT_SCALE
    const showSearchBox = this.canvas.showSearchBox.bind(this.canvas);
    this.canvas.showSearchBox = (event, options) => {
      const dialog = showSearchBox(event, options);
      this.enterPicksCurrentResults(dialog?.querySelector("input"));
      return dialog;
    };
    this.canvas.onSearchBox = (helper, text) => {
      this.searchedText = text;
      // litegraph appends the results after this returns; then show each one's category beside it
      queueMicrotask(() => {
        for (const item of helper.querySelectorAll(".lite-search-item")) {
          const cls = LiteGraph.registered_node_types[unescape(item.dataset.type)];
          const label = item.querySelector(".lite-search-item-type");
          if (cls && label) label.textContent = cls.category ?? "";
        }
      });
      return this.searchNodes(text);
    };
    this.canvas.getMenuOptions = () => this.canvasMenuOptions();
    this.graph.onAfterChange = () => this.tracker?.checkSoon();
    this.graph.onConfigure = () => {
      for (const node of this.graph.nodes) node.onGraphConfigured?.();
    };
    element.addEventListener("pointerup", () => this.tracker.checkSoon());
    element.addEventListener("wheel", () => this.closeTextEditor?.(), { passive: true });
    document.addEventListener("keyup", (e) => {
      if (!this.isTyping(e)) this.tracker.checkSoon();
    });
    const resize = () => {
      const scale = Math.max(window.devicePixelRatio, 1);
      const { width, height } = element.parentElement.getBoundingClientRect();
      element.width = Math.round(width * scale);
      element.height = Math.round(height * scale);
      element.style.width = `${width}px`;
      element.style.height = `${height}px`;
      element.getContext("2d").scale(scale, scale);
      this.canvas.draw(true, true);
    };
    new ResizeObserver(resize).observe(element.parentElement);
    resize();
  }

  /** Search-box results: node types whose name, title or category contain every word typed. */
  searchNodes(text) {
    const words = text.toLowerCase().split(/\s+/).filter(Boolean);
    const scored = [];
    for (const [type, cls] of Object.entries(LiteGraph.registered_node_types)) {
      const title = String(cls.title ?? type).toLowerCase();
      const haystack = `${title} ${type.toLowerCase()} ${String(cls.category ?? "").toLowerCase()}`;
      if (!words.every((w) => haystack.includes(w))) continue;
      const query = words.join(" ");
      const score = !query ? 3 : title === query || type.toLowerCase() === query ? 0
        : title.startsWith(query) || type.toLowerCase().startsWith(query) ? 1 : 2;
      scored.push([score, title, type]);
    }
    scored.sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1]));
    return scored.slice(0, 60).map(([, , type]) => type);
  }

  /**
   * litegraph lists the search results 10 ms after the last key, and Enter takes the first result listed:
   * typed or pasted quickly, Enter would add a node that matched an earlier part of the text. Hold Enter
   * back until the results are those of the text in the box.
   */
  enterPicksCurrentResults(input) {
    if (!input) return;
    input.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || e.diffloomRetry || this.searchedText === input.value) return;
      e.preventDefault();
      e.stopImmediatePropagation();
      // any other key makes litegraph list the results for the current text
      input.dispatchEvent(new KeyboardEvent("keydown", { key: "Shift", bubbles: true }));
      setTimeout(() => {
        const again = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
        again.diffloomRetry = true;
        input.dispatchEvent(again);
      }, 30);
    }, { capture: true });
  }

  /** Open the node search box at a screen position (default: the middle of the canvas). */
  openSearch(clientX, clientY) {
    const rect = this.canvasElement.getBoundingClientRect();
    const x = clientX ?? rect.left + rect.width / 2;
    const y = clientY ?? rect.top + rect.height / 3;
    const event = new MouseEvent("dblclick", { clientX: x, clientY: y });
    Object.defineProperty(event, "layerY", { value: y - rect.top });
    LGraphCanvas.active_canvas = this.canvas;
    this.canvas.showSearchBox(event);
  }

  canvasMenuOptions() {
    const selected = Object.keys(this.canvas.selected_nodes).length;
    return [
      { content: "Add Node", has_submenu: true, callback: LGraphCanvas.onMenuAdd },
      { content: "Search nodes… (/)", callback: (v, o, e) => this.openSearch(e?.clientX, e?.clientY) },
      { content: "Add Group", callback: LGraphCanvas.onGroupAdd },
      selected ? { content: "Group selected nodes (Ctrl+G)", callback: () => this.groupSelected() } : null,
      null,
      { content: "Fit view", callback: () => this.fitView() },
    ];
  }

  groupSelected() {
    const items = [...this.canvas.selectedItems];
    if (!items.length) {
      toast("Select the nodes to group first", "info");
      return;
    }
    const group = new LGraphGroup("Group");
    group.resizeTo(items, 12);
    this.graph.add(group);
    this.tracker.checkSoon();
  }

  /** Show the whole graph, or (when that would make its text unreadable) its top-left part at a readable scale. */
  fitView() {
    const nodes = this.graph.nodes;
    if (!nodes.length) return;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const node of nodes) {
      x0 = Math.min(x0, node.pos[0]);
      y0 = Math.min(y0, node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
      x1 = Math.max(x1, node.pos[0] + node.size[0]);
      y1 = Math.max(y1, node.pos[1] + node.size[1]);
    }
    const rect = this.canvasElement.getBoundingClientRect();
    const margin = 40;
    const fit = Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0));
    const scale = Math.min(1.2, Math.max(MIN_FIT_SCALE, fit));
    const { ds } = this.canvas;
    ds.scale = scale;
    const spareX = rect.width / scale - (x1 - x0);
    const spareY = rect.height / scale - (y1 - y0);
    ds.offset[0] = -x0 + (spareX > 0 ? spareX / 2 : margin / scale);
    ds.offset[1] = -y0 + (spareY > 0 ? spareY / 2 : margin / scale);
    this.canvas.setDirty(true, true);
  }

  zoomBy(factor) {
    const rect = this.canvasElement.getBoundingClientRect();
    this.canvas.ds.changeScale(this.canvas.ds.scale * factor, [rect.width / 2, rect.height / 2]);
    this.canvas.setDirty(true, true);
  }

  focusNode(id) {
    const node = this.graph.getNodeById(Number(id)) ?? this.graph.getNodeById(id);
    if (!node) return;
    this.canvas.centerOnNode(node);
    this.canvas.selectNode(node);
  }

  // ---------------------------------------------------------------- node hooks

  nodeHooks() {
    return {
      editText: (node, widget) => this.editText(node, widget),
      nodeCreated: (node) => this.onNodeCreated(node),
      beforeRegister: (nodeType, nodeData) => this.extensions.beforeRegisterNodeDef(nodeType, nodeData),
      nodeConfigured: (node) => this.images.refreshUploadPreview(node),
      widgetChanged: (node, widget) => {
        if (widget?.options?.upload) this.images.refreshUploadPreview(node);
        this.tracker.checkSoon();
      },
      drawForeground: (node, ctx) => this.execution.drawForeground(node, ctx),
      drawBackground: (node, ctx) => {
        // litegraph lays widgets out after these hooks; lay them out now so positions are right on the first frame
        if (!node.flags?.collapsed) {
          node._setConcreteSlots();
          node.arrange();
        }
        this.images.draw(node, ctx);
      },
      extraMenuOptions: (node, options) => this.nodeMenuOptions(node, options),
    };
  }

  onNodeCreated(node) {
    const upload = node.widgets?.find((w) => w.options?.upload);
    if (upload) {
      const button = node.addWidget("button", "choose file to upload", "image", () => this.images.pickUpload(node, upload));
      button.serialize = false;
      button.label = "choose file to upload";
      node.setSize([Math.max(node.size[0], 260), node.computeSize()[1]]);
      this.images.refreshUploadPreview(node);
    }
    this.extensions.invokeSync("nodeCreated", node);
  }

  nodeMenuOptions(node, options) {
    // litegraph's own modes (events, triggers) and subgraphs are not what this editor runs: use ComfyUI's modes
    for (let i = options.length - 1; i >= 0; i--) {
      const content = String(options[i]?.content ?? "");
      if (content.startsWith("Convert to Subgraph")) options.splice(i, 1);
      else if (content === "Mode") {
        options[i] = {
          content: "Mode",
          has_submenu: true,
          callback: (value, menuOptions, event, parent) => new LiteGraph.ContextMenu(
            Object.keys(NODE_MODES), {
              event, parentMenu: parent, callback: (choice) => this.setMode(this.selectedOr(node), NODE_MODES[choice]),
            }),
        };
      }
    }
    const upload = node.widgets?.find((w) => w.options?.upload);
    const images = node.imageUrls ?? [];
    const items = [];
    if (images.length) {
      items.push({ content: "Open image", callback: () => this.showImage(images[0], node.title) });
    }
    if (upload && upload.value) {
      items.push({ content: "Edit mask…", callback: () => this.images.editMask(node, upload) });
    }
    return items.length ? [null, ...items] : [];
  }

  /** The selected nodes if `node` is among them, else just `node`. */
  selectedOr(node) {
    const selected = Object.values(this.canvas.selected_nodes);
    return selected.includes(node) ? selected : [node];
  }

  /** Set (or, when all already have it, clear) a ComfyUI mode on nodes: 0 always, 2 muted, 4 bypassed. */
  setMode(nodes, mode, { toggle = false } = {}) {
    const target = toggle && nodes.every((n) => n.mode === mode) ? NODE_MODES.Always : mode;
    for (const node of nodes) node.mode = target;
    this.canvas.setDirty(true, true);
    this.tracker.checkSoon();
  }

  /** A textarea over a multi-line widget, live-editing its value. */
  editText(node, widget) {
    this.closeTextEditor?.();
    const rect = this.canvasElement.getBoundingClientRect();
    const { ds } = this.canvas;
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0] + 15, node.pos[1] + widget.y]);
    const width = (node.size[0] - 30) * ds.scale;
    const height = ((widget.computedHeight ?? 68) - 4) * ds.scale;
    const area = el("textarea.text-editor", {
      spellcheck: "false",
      "aria-label": widget.name,
      style: `left:${rect.left + x}px;top:${rect.top + y}px;width:${width}px;height:${height}px;`
        + `font-size:${Math.max(10, 12 * ds.scale)}px`,
    });
    area.value = widget.value ?? "";
    const commit = () => {
      if (area.value !== widget.value) {
        widget.value = area.value;
        node.onWidgetChanged?.(widget.name, widget.value, null, widget);
        this.canvas.setDirty(true);
      }
    };
    area.addEventListener("input", commit);
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape" || (e.key === "Enter" && (e.ctrlKey || e.metaKey))) {
        e.preventDefault();
        this.closeTextEditor();
      }
      e.stopPropagation();
    });
    area.addEventListener("blur", () => this.closeTextEditor?.());
    this.closeTextEditor = () => {
      this.closeTextEditor = null;
      commit();
      area.remove();
      this.tracker.checkSoon();
    };
    document.body.append(area);
    area.focus();
  }

  showImage(url, caption) {
    showDialog(caption ?? "Image", el("figure.viewer", {}, [
      el("img", { src: url, alt: caption ?? "" }),
      el("figcaption", {}, [el("a", { href: url, target: "_blank", rel: "noopener", text: "Open in a new tab" })]),
    ]), { wide: true });
  }

  showLivePreview(url) {
    const box = document.getElementById("live-preview");
    box.querySelector("img").src = url;
    box.hidden = false;
  }

  hideLivePreview() {
    document.getElementById("live-preview").hidden = true;
  }

  setProgress(progress) {
    const box = document.getElementById("progress");
    if (!progress) {
      box.dataset.state = "idle";
      box.querySelector(".bar").style.width = "0%";
      box.querySelector(".label").textContent = this.api.connected ? "idle" : "disconnected";
      return;
    }
    box.dataset.state = "running";
    const fraction = progress.max ? progress.value / progress.max : 0;
    box.querySelector(".bar").style.width = `${Math.round(fraction * 100)}%`;
    box.querySelector(".label").textContent = progress.label;
  }

  setConnection(connected) {
    document.body.dataset.connected = String(connected);
    if (!this.execution.executing) this.setProgress(null);
    if (connected) this.queuePanels.refresh();
  }

  // ---------------------------------------------------------------- workflows

  async loadNodeDefinitions() {
    this.objectInfo = await this.api.objectInfo();
    await this.extensions.invoke("addCustomNodeDefs", this.objectInfo);
    await registerNodeTypes(this.objectInfo, this.nodeHooks());
    await this.extensions.invoke("registerCustomNodes");
  }

  /** Reload /object_info (new models or images) keeping the current graph. */
  async refreshNodeDefinitions() {
    const state = serializeGraph(this.graph);
    await this.loadNodeDefinitions();
    this.loadUiWorkflow(state, this.workflowName, { keepHistory: true });
    toast("Node definitions and model lists refreshed", "success", { timeout: 2500 });
  }

  snapshot() {
    const data = serializeGraph(this.graph);
    delete data.extra?.ds;
    return data;
  }

  restore(state) {
    const ds = { scale: this.canvas.ds.scale, offset: [...this.canvas.ds.offset] };
    this.graph.configure(state);
    this.canvas.ds.scale = ds.scale;
    this.canvas.ds.offset = ds.offset;
    this.reattachOutputs();
    this.canvas.setDirty(true, true);
  }

  onModified() {
    try {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ name: this.workflowName, workflow: serializeGraph(this.graph) }));
    } catch {
      // storage full or disabled: the session is simply not restored
    }
    document.getElementById("btn-undo").disabled = !this.tracker.undoStack.length;
    document.getElementById("btn-redo").disabled = !this.tracker.redoStack.length;
  }

  reattachOutputs() {
    for (const [id, images] of this.execution.outputs) {
      const node = this.graph.getNodeById(Number(id));
      if (node) this.images.set(node, images.map((image) => this.api.viewUrl(image)));
    }
    for (const node of this.graph.nodes) this.images.refreshUploadPreview(node);
  }

  setWorkflowName(name) {
    this.workflowName = name;
    document.getElementById("workflow-name").textContent = name;
    document.title = `${name} - diffloom`;
  }

  afterLoad(name, { keepHistory = false } = {}) {
    for (const node of this.graph.nodes) this.extensions.invokeSync("loadedGraphNode", node);
    const missing = [...new Set(this.graph.nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]))];
    this.extensions.invokeSync("afterConfigureGraph", missing);
    this.execution.clearErrors();
    this.execution.outputs.clear();
    this.reattachOutputs();
    this.setWorkflowName(name);
    if (!keepHistory) this.tracker.reset();
    this.onModified();
    this.canvas.setDirty(true, true);
  }

  /** ComfyUI's default txt2img graph on the first checkpoint, sized and prompted by the checkpoint's metadata. */
  async loadDefault() {
    const checkpoint = firstCheckpoint(this.objectInfo);
    if (!checkpoint) toast("No checkpoint found in models/checkpoints: add one to run this graph", "error", { timeout: 8000 });
    const hints = checkpoint ? modelHints(await this.api.modelMetadata("checkpoints", checkpoint)) : {};
    const prompt = defaultPrompt(checkpoint ?? "v1-5-pruned-emaonly-fp16.safetensors", hints);
    const missing = loadApiPrompt(this.graph, prompt, DEFAULT_LAYOUT);
    this.reportMissing(missing);
    this.afterLoad("Default txt2img");
    this.fitView();
  }

  newWorkflow() {
    this.graph.clear();
    this.canvas.ds.scale = 1;
    this.canvas.ds.offset = [0, 0];
    this.afterLoad("Unsaved workflow");
  }

  reportMissing(list) {
    if (list.length) toast(`The server has no node type for: ${list.join(", ")}`, "error", { timeout: 10000 });
  }

  loadUiWorkflow(data, name, options) {
    const missing = (data.nodes ?? []).filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => `${n.id} (${n.type})`);
    this.graph.configure(structuredClone(data));
    this.reportMissing(missing);
    if (data.extra?.ds && Array.isArray(data.extra.ds.offset)) {
      this.canvas.ds.scale = data.extra.ds.scale;
      this.canvas.ds.offset = [...data.extra.ds.offset];
      this.afterLoad(name, options);
    } else {
      this.afterLoad(name, options);
      this.fitView();
    }
  }

  /** Load any supported workflow object (UI, API, or a wrapper of one). */
  loadWorkflowData(data, name) {
    const workflow = unwrapWorkflow(data);
    if (workflowKind(workflow) === "ui") {
      this.loadUiWorkflow(workflow, name);
    } else {
      this.reportMissing(loadApiPrompt(this.graph, workflow));
      this.afterLoad(name);
      this.fitView();
    }
  }

  // ---------------------------------------------------------------- queueing

  /** Queue the canvas's workflow `count` times (default: the Batch field). */
  async queue({ front = false, count } = {}) {
    const times = Math.max(1, Math.min(100, Number(count ?? document.getElementById("batch-count").value) || 1));
    this.closeTextEditor?.();
    this.execution.clearErrors();
    for (let i = 0; i < times; i++) {
      const workflow = serializeGraph(this.graph);
      try {
        const answer = await this.api.queueWorkflow(workflow, { front });
        if (answer?.node_errors && Object.keys(answer.node_errors).length) {
          this.execution.showValidationErrors(answer.node_errors, null);
        }
      } catch (error) {
        this.reportQueueError(error);
        break;
      }
      for (const node of this.graph.nodes) applyControlWidgets(node);
      this.canvas.setDirty(true);
    }
    this.tracker.check();
    this.queuePanels.refresh();
  }

  reportQueueError(error) {
    if (error instanceof ApiError && error.body?.node_errors) {
      this.execution.showValidationErrors(error.body.node_errors, error.body.error);
    } else if (error instanceof ApiError && error.body?.error) {
      const { message, details } = error.body.error;
      this.errorPanel.show("The server refused the prompt", [{ id: null, label: message ?? "Error", text: details ?? "" }]);
    } else {
      toast(error.message, "error");
    }
  }

  // ---------------------------------------------------------------- wiring

  bindToolbar() {
    const on = (id, handler) => document.getElementById(id).addEventListener("click", handler);
    const fileInput = document.getElementById("file-input");
    on("btn-new", () => this.newWorkflow());
    on("btn-default", () => this.loadDefault());
    on("btn-open", () => fileInput.click());
    fileInput.addEventListener("change", () => {
      if (fileInput.files?.[0]) this.files.openFile(fileInput.files[0]);
      fileInput.value = "";
    });
    on("btn-save", () => this.files.save());
    on("btn-export", () => this.files.exportApi());
    on("btn-undo", () => this.tracker.undo());
    on("btn-redo", () => this.tracker.redo());
    on("btn-add", () => this.openSearch());
    on("btn-fit", () => this.fitView());
    on("btn-zoom-in", () => this.zoomBy(1.25));
    on("btn-zoom-out", () => this.zoomBy(0.8));
    on("btn-refresh", () => this.refreshNodeDefinitions());
    on("btn-queue", () => this.queue());
    on("btn-interrupt", () => this.api.interrupt().catch((e) => toast(e.message, "error")));
    const menu = document.getElementById("workflow-menu");
    on("btn-workflows", (e) => {
      e.stopPropagation();
      menu.hidden = !menu.hidden;
      if (!menu.hidden) this.files.refreshList();
    });
    document.addEventListener("pointerdown", (e) => {
      if (!menu.hidden && !menu.contains(e.target) && e.target.id !== "btn-workflows") menu.hidden = true;
    });
  }

  isTyping(e) {
    const tag = e.target?.localName;
    return tag === "input" || tag === "textarea" || tag === "select" || e.target?.isContentEditable;
  }

  bindKeys() {
    document.addEventListener("keydown", (e) => {
      const ctrl = e.ctrlKey || e.metaKey;
      if (ctrl && e.key === "Enter") {
        e.preventDefault();
        this.queue({ front: e.shiftKey });
        return;
      }
      if (this.isTyping(e) || document.querySelector(".backdrop, .litesearchbox")) return;
      const key = e.key.toLowerCase();
      let handled = true;
      if (ctrl && key === "z" && !e.shiftKey) this.tracker.undo();
      else if (ctrl && (key === "y" || (key === "z" && e.shiftKey))) this.tracker.redo();
      else if (ctrl && key === "s") this.files.save();
      else if (ctrl && key === "o") document.getElementById("file-input").click();
      else if (ctrl && key === "g") this.groupSelected();
      else if (ctrl && key === "m") this.setMode(Object.values(this.canvas.selected_nodes), 2, { toggle: true });
      else if (ctrl && key === "b") this.setMode(Object.values(this.canvas.selected_nodes), 4, { toggle: true });
      else if (!ctrl && !e.altKey && e.key === "/") this.openSearch(this.lastPointer?.[0], this.lastPointer?.[1]);
      else if (!ctrl && !e.altKey && key === "." ) this.fitView();
      else handled = false;
      if (handled) {
        e.preventDefault();
        e.stopPropagation();
      }
    }, true);
    this.canvasElement.addEventListener("pointermove", (e) => {
      this.lastPointer = [e.clientX, e.clientY];
    });
  }

  bindSidebar() {
    for (const tab of document.querySelectorAll("#sidebar [role=tab]")) {
      tab.addEventListener("click", () => {
        for (const other of document.querySelectorAll("#sidebar [role=tab]")) {
          other.setAttribute("aria-selected", String(other === tab));
          document.getElementById(other.getAttribute("aria-controls")).hidden = other !== tab;
        }
        if (tab.dataset.refresh) this.queuePanels.refresh();
      });
    }
  }
}

// The `app` and `api` objects ComfyUI's browser extensions import from /scripts/app.js and
// /scripts/api.js, implemented on this editor. Only the part a simple extension needs is here;
// custom_nodes/README.md lists it. The editor binds them to itself when it starts.

import { LGraphCanvas, LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { callerScript, ExtensionHost, pluginOfUrl } from "./extensions.js";
import { serializeGraph } from "./workflow.js";

// Extensions written for ComfyUI reach litegraph through globals.
Object.assign(globalThis, { LiteGraph, LGraphCanvas, LGraphNode });

// Events whose `detail` ComfyUI's frontend shapes differently from the server's `data` (which this
// editor's Api dispatches), or names differently: `type` is the editor's event, `detail` makes
// ComfyUI's detail of the editor's, `back` the editor's of ComfyUI's (for dispatchCustomEvent).
const COMFY_EVENTS = {
  status: { type: "status", detail: (d) => d?.status ?? null, back: (d) => ({ status: d }) },
  executing: {
    type: "executing",
    detail: (d) => d?.display_node ?? d?.node ?? null,
    back: (d) => ({ node: d, display_node: d }),
  },
  b_preview: { type: "preview", detail: (d) => d?.blob, back: (d) => ({ kind: "preview", blob: d, metadata: null }) },
};

let editor = null; // the running App

export const extensionHost = new ExtensionHost();

/** The `api` of /scripts/api.js: websocket events and the server's routes. */
class ComfyApiFacade {
  constructor() {
    this.api_base = "";
    this._listeners = new Map(); // "type" -> Map(fn -> wrapped listener)
    this._pending = []; // listeners added before the editor was bound: [type, wrapped, options]
  }

  get clientId() {
    return editor?.api.clientId ?? null;
  }

  /** `/api` + route: what fetchApi calls. */
  apiURL(route) {
    return `${this.api_base}/api${route}`;
  }

  /** A route outside /api (an extension's own files). */
  fileURL(route) {
    return `${this.api_base}${route}`;
  }

  /** fetch() on a server route under /api; resolves to the Response, as ComfyUI's fetchApi does. */
  fetchApi(route, options = {}) {
    return fetch(this.apiURL(route), { cache: "no-store", ...options });
  }

  /**
   * Listen to a websocket event: any type the server sends (built-in or sent by a plugin with
   * PromptServer.instance.send_sync / graph.api.send), with the event's data as `detail`, except
   * where ComfyUI's frontend gives another detail: "status" {exec_info}, "executing" the node id
   * (null when the prompt is done), "b_preview" the preview image Blob. A listener that throws is
   * reported, never breaks the editor.
   */
  addEventListener(type, listener, options) {
    if (typeof listener !== "function") return;
    const shaped = COMFY_EVENTS[type];
    const source = callerScript();
    const wrapped = (event) => {
      const seen = shaped ? new CustomEvent(type, { detail: shaped.detail(event.detail) }) : event;
      try {
        const result = listener.call(this, seen);
        if (result && typeof result.catch === "function") result.catch((error) => this._report(type, source, error));
      } catch (error) {
        this._report(type, source, error);
      }
    };
    const byType = this._listeners.get(type) ?? new Map();
    if (byType.has(listener)) return;
    byType.set(listener, wrapped);
    this._listeners.set(type, byType);
    const target = shaped?.type ?? type;
    if (editor) editor.api.addEventListener(target, wrapped, options);
    else this._pending.push([target, wrapped, options]);
  }

  removeEventListener(type, listener, options) {
    const wrapped = this._listeners.get(type)?.get(listener);
    if (!wrapped) return;
    this._listeners.get(type).delete(listener);
    const target = COMFY_EVENTS[type]?.type ?? type;
    this._pending = this._pending.filter(([, w]) => w !== wrapped);
    editor?.api.removeEventListener(target, wrapped, options);
  }

  /** Send an event to every listener of `type` (the editor's too), as if the server had sent it. */
  dispatchCustomEvent(type, detail) {
    const shaped = COMFY_EVENTS[type];
    editor?.api.dispatchEvent(new CustomEvent(shaped?.type ?? type, { detail: shaped ? shaped.back(detail) : detail }));
  }

  _bind() {
    for (const [type, wrapped, options] of this._pending) editor.api.addEventListener(type, wrapped, options);
    this._pending = [];
  }

  _report(type, source, error) {
    extensionHost.fail({ plugin: pluginOfUrl(source), script: source, extension: "", hook: `listener of '${type}'`, error });
  }
}

export const comfyApi = new ComfyApiFacade();

/** The `app` of /scripts/app.js: extension registration, the graph and canvas, queueing. */
class ComfyAppFacade {
  get api() {
    return comfyApi;
  }

  /** The registered extensions, in registration order. */
  get extensions() {
    return extensionHost.extensions;
  }

  get graph() {
    return editor?.graph;
  }

  get canvas() {
    return editor?.canvas;
  }

  get canvasEl() {
    return editor?.canvasElement;
  }

  /** Node definitions by class_type, as /object_info gave them. */
  get nodeDefs() {
    return editor?.objectInfo ?? {};
  }

  /** Add an extension: {name, init, setup, addCustomNodeDefs, beforeRegisterNodeDef, registerCustomNodes, nodeCreated, loadedGraphNode, afterConfigureGraph}. */
  registerExtension(extension) {
    extensionHost.register(extension, callerScript());
  }

  /** Queue the canvas's workflow `batchCount` times; `number` -1 puts it at the front, as in ComfyUI. */
  async queuePrompt(number = 0, batchCount = 1) {
    if (!editor) throw new Error("queuePrompt: the editor has not started");
    await editor.queue({ front: number === -1, count: batchCount });
    return true;
  }

  /** {workflow, output}: the canvas as a UI workflow and as the API prompt the server would run. */
  async graphToPrompt() {
    if (!editor) throw new Error("graphToPrompt: the editor has not started");
    const workflow = serializeGraph(editor.graph);
    return { workflow, output: await editor.api.convertWorkflow(workflow) };
  }

  /** Load a workflow (UI or API format) into the canvas; none loads the default graph. */
  async loadGraphData(graphData, clean, restore, workflowName) {
    if (!editor) throw new Error("loadGraphData: the editor has not started");
    if (!graphData) await editor.loadDefault();
    else editor.loadWorkflowData(graphData, workflowName ?? "Workflow from an extension");
  }

  /** Reload node definitions and model lists, keeping the graph. */
  async refreshComboInNodes() {
    await editor?.refreshNodeDefinitions();
  }
}

export const comfyApp = new ComfyAppFacade();
extensionHost.facade = comfyApp;

/** Bind the facades to the running editor (its Api, graph and canvas). */
export function bindEditor(app) {
  editor = app;
  comfyApi._bind();
}

// HTTP and websocket client for the server's ComfyUI-compatible API.
//
// Every route is called under /api. The websocket reconnects by itself and re-dispatches each
// JSON event as a DOM event of the same name (detail = its data); binary preview frames become
// "preview" events with a Blob.

const PREVIEW_IMAGE = 1;
const TEXT = 3;
const PREVIEW_IMAGE_WITH_METADATA = 4;
const IMAGE_MIME = { 1: "image/jpeg", 2: "image/png" };

/** An HTTP answer that is not 2xx; `body` holds the parsed JSON error when there is one. */
export class ApiError extends Error {
  constructor(path, status, body, text) {
    const detail = body?.error?.message ?? body?.error ?? text ?? "";
    super(`${path}: HTTP ${status}${detail ? ` - ${typeof detail === "string" ? detail : JSON.stringify(detail)}` : ""}`);
    this.path = path;
    this.status = status;
    this.body = body;
  }
}

/** Decode one binary websocket frame: {kind: "preview", blob, metadata} or {kind: "text", nodeId, text}. */
export function parseBinaryFrame(buffer) {
  const view = new DataView(buffer);
  const type = view.getUint32(0, false);
  if (type === PREVIEW_IMAGE) {
    const format = view.getUint32(4, false);
    const mime = IMAGE_MIME[format] ?? "image/jpeg";
    return { kind: "preview", blob: new Blob([buffer.slice(8)], { type: mime }), metadata: null };
  }
  if (type === PREVIEW_IMAGE_WITH_METADATA) {
    const length = view.getUint32(4, false);
    const metadata = JSON.parse(new TextDecoder().decode(buffer.slice(8, 8 + length)));
    const mime = metadata.image_type ?? "image/jpeg";
    return { kind: "preview", blob: new Blob([buffer.slice(8 + length)], { type: mime }), metadata };
  }
  if (type === TEXT) {
    const length = view.getUint32(4, false);
    const decoder = new TextDecoder();
    return {
      kind: "text",
      nodeId: decoder.decode(buffer.slice(8, 8 + length)),
      text: decoder.decode(buffer.slice(8 + length)),
    };
  }
  return { kind: "unknown", type };
}

function newClientId() {
  return crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "") : String(Math.random()).slice(2);
}

export class Api extends EventTarget {
  constructor(base = "") {
    super();
    this.base = base;
    this.clientId = sessionStorage.getItem("diffloom.clientId") || newClientId();
    sessionStorage.setItem("diffloom.clientId", this.clientId);
    this.socket = null;
    this.connected = false;
    this._reconnectDelay = 500;
  }

  url(path) {
    return `${this.base}/api${path}`;
  }

  async request(path, { method = "GET", json, body, headers } = {}) {
    const init = { method, headers: { ...(headers ?? {}) }, cache: "no-store" };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    } else if (body !== undefined) {
      init.body = body;
    }
    const response = await fetch(this.url(path), init);
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
    }
    if (!response.ok) throw new ApiError(path, response.status, parsed, parsed ? null : text.slice(0, 200));
    return parsed;
  }

  objectInfo() {
    return this.request("/object_info");
  }

  /** The safetensors metadata of a model file (GET /view_metadata), or null if it has none or cannot be read. */
  async modelMetadata(folder, filename) {
    try {
      return await this.request(`/view_metadata/${encodeURIComponent(folder)}?filename=${encodeURIComponent(filename)}`);
    } catch {
      return null;
    }
  }

  /** URLs of the plugins' browser extension scripts. */
  extensionUrls() {
    return this.request("/extensions");
  }

  /** Every plugin with its status, cause, timing, nodes and warnings (GET /api/diffloom/plugins). */
  pluginReport() {
    return this.request("/diffloom/plugins");
  }

  /** Queue a UI-format workflow (the server converts it); resolves to {prompt_id, number, node_errors}. */
  queueWorkflow(workflow, { front = false } = {}) {
    return this.request("/prompt", {
      method: "POST",
      json: {
        prompt: workflow,
        client_id: this.clientId,
        front,
        extra_data: { extra_pnginfo: { workflow } },
      },
    });
  }

  /** UI workflow -> API prompt, converted by the server with its node schemas. */
  async convertWorkflow(workflow) {
    const answer = await this.request("/workflow/convert", { method: "POST", json: { workflow } });
    return answer.prompt;
  }

  getQueue() {
    return this.request("/queue");
  }

  deleteQueued(promptIds) {
    return this.request("/queue", { method: "POST", json: { delete: promptIds } });
  }

  interrupt(promptId) {
    return this.request("/interrupt", { method: "POST", json: promptId ? { prompt_id: promptId } : {} });
  }

  getHistory(maxItems = 50) {
    return this.request(`/history?max_items=${maxItems}`);
  }

  listWorkflows() {
    return this.request("/workflows");
  }

  getWorkflow(name) {
    return this.request(`/workflows/${name.split("/").map(encodeURIComponent).join("/")}`);
  }

  /** URL of an image the server wrote or holds: {filename, subfolder, type}. */
  viewUrl({ filename, subfolder = "", type = "output" }, extra = "") {
    const query = new URLSearchParams({ filename, subfolder, type });
    return `${this.url("/view")}?${query}${extra}`;
  }

  async uploadImage(file, { subfolder = "", type = "input", overwrite = false, name } = {}) {
    const form = new FormData();
    form.append("image", file, name ?? file.name);
    form.append("type", type);
    form.append("subfolder", subfolder);
    if (overwrite) form.append("overwrite", "true");
    return this.request("/upload/image", { method: "POST", body: form });
  }

  async uploadMask(blob, name, originalRef) {
    const form = new FormData();
    form.append("image", blob, name);
    form.append("type", "input");
    form.append("subfolder", originalRef.subfolder ?? "");
    form.append("original_ref", JSON.stringify(originalRef));
    return this.request("/upload/mask", { method: "POST", body: form });
  }

  /** Open the websocket; events are dispatched on this object. */
  connect() {
    const protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${protocol}//${location.host}${this.base}/ws?clientId=${this.clientId}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.connected = true;
      this._reconnectDelay = 500;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.dispatchEvent(new CustomEvent("connected"));
    });
    socket.addEventListener("message", (event) => this._onMessage(event));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.connected = false;
      this.dispatchEvent(new CustomEvent("disconnected"));
      setTimeout(() => this.connect(), this._reconnectDelay);
      this._reconnectDelay = Math.min(this._reconnectDelay * 2, 8000);
    });
  }

  _onMessage(event) {
    if (event.data instanceof ArrayBuffer) {
      const frame = parseBinaryFrame(event.data);
      if (frame.kind === "preview") {
        this.dispatchEvent(new CustomEvent("preview", { detail: frame }));
      } else if (frame.kind === "text") {
        this.dispatchEvent(new CustomEvent("progress_text", { detail: frame }));
      }
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not ours to understand; a server plugin may send anything
    }
    if (message?.type === "status" && message.data?.sid) {
      this.clientId = message.data.sid;
      sessionStorage.setItem("diffloom.clientId", this.clientId);
    }
    if (typeof message?.type === "string") {
      this.dispatchEvent(new CustomEvent(message.type, { detail: message.data ?? {} }));
    }
  }
}

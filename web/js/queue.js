// The sidebar panels: queue (running and pending prompts, each cancellable), history (results,
// reloadable into the canvas) and the gallery of images made in this session.

import { el, toast } from "./ui.js";

function outputImages(outputs) {
  const images = [];
  for (const [nodeId, output] of Object.entries(outputs ?? {})) {
    for (const image of output?.images ?? []) images.push({ ...image, nodeId });
  }
  return images;
}

function workflowOf(promptEntry) {
  // a queue or history item is [number, prompt_id, prompt, extra_data, outputs_to_execute]
  const [, , prompt, extra] = promptEntry ?? [];
  return extra?.extra_pnginfo?.workflow ?? prompt;
}

export class QueuePanels {
  constructor(app, { queueList, historyList, gallery, queueBadge }) {
    this.app = app;
    this.api = app.api;
    this.queueList = queueList;
    this.historyList = historyList;
    this.gallery = gallery;
    this.queueBadge = queueBadge;
    this._refreshing = null;
  }

  /** Reload the queue and history from the server (coalesces calls made while one runs). */
  refresh() {
    if (this._refreshing) {
      this._again = true;
      return this._refreshing;
    }
    this._refreshing = Promise.all([this.refreshQueue(), this.refreshHistory()])
      .catch((error) => console.warn("queue refresh failed:", error.message))
      .finally(() => {
        this._refreshing = null;
        if (this._again) {
          this._again = false;
          this.refresh();
        }
      });
    return this._refreshing;
  }

  async refreshQueue() {
    const queue = await this.api.getQueue();
    const running = queue.queue_running ?? [];
    const pending = [...(queue.queue_pending ?? [])].sort((a, b) => a[0] - b[0]);
    this.queueBadge.textContent = String(running.length + pending.length);
    this.queueBadge.hidden = running.length + pending.length === 0;
    const rows = [
      ...running.map((item) => this._queueRow(item, true)),
      ...pending.map((item) => this._queueRow(item, false)),
    ];
    this.queueList.replaceChildren(...(rows.length ? rows : [el("p.empty", { text: "Nothing queued." })]));
  }

  _queueRow(item, running) {
    const [number, promptId, prompt] = item;
    const count = Object.keys(prompt ?? {}).length;
    const cancel = async () => {
      try {
        if (running) await this.api.interrupt(promptId);
        else await this.api.deleteQueued([promptId]);
      } catch (error) {
        toast(`Could not cancel prompt #${number}: ${error.message}`, "error");
      }
      this.refresh();
    };
    return el(`div.queue-item${running ? ".running" : ".pending"}`, { dataset: { promptId } }, [
      el("span.number", { text: `#${number}` }),
      el("span.state", { text: running ? "running" : "pending" }),
      el("span.count", { text: `${count} nodes` }),
      el("button.cancel", { title: running ? "Stop this prompt" : "Remove from the queue", onclick: cancel },
        [running ? "Stop" : "Cancel"]),
    ]);
  }

  async refreshHistory() {
    const history = await this.api.getHistory(30);
    const entries = Object.entries(history ?? {}).sort((a, b) => (b[1].prompt?.[0] ?? 0) - (a[1].prompt?.[0] ?? 0));
    const rows = entries.map(([promptId, entry]) => this._historyRow(promptId, entry));
    this.historyList.replaceChildren(...(rows.length ? rows : [el("p.empty", { text: "No finished prompts yet." })]));
  }

  _historyRow(promptId, entry) {
    const number = entry.prompt?.[0];
    const status = entry.status?.status_str ?? (entry.status?.completed ? "success" : "unknown");
    const images = outputImages(entry.outputs);
    const load = () => {
      const workflow = workflowOf(entry.prompt);
      if (!workflow) {
        toast(`Prompt #${number} has no workflow to load`, "error");
        return;
      }
      this.app.loadWorkflowData(workflow, `history #${number}`);
    };
    return el(`div.history-item.${status}`, { dataset: { promptId } }, [
      el("div.row", {}, [
        el("span.number", { text: `#${number}` }),
        el("span.state", { text: status }),
        el("button.load", { title: "Load this prompt's workflow into the canvas", onclick: load }, ["Load"]),
      ]),
      images.length ? el("div.thumbs", {}, images.slice(0, 6).map((image) => this._thumb(image))) : null,
    ]);
  }

  _thumb(image) {
    const url = this.api.viewUrl(image);
    return el("img.thumb", { src: url, alt: image.filename, title: image.filename, loading: "lazy",
      onclick: () => this.app.showImage(url, image.filename) });
  }

  /** Add images a node just produced to the gallery (newest first). */
  addToGallery(images) {
    this.gallery.querySelector(".empty")?.remove();
    for (const image of images) {
      const url = this.api.viewUrl(image);
      const figure = el("figure.gallery-item", {}, [
        el("img", { src: url, alt: image.filename, onclick: () => this.app.showImage(url, image.filename) }),
        el("figcaption", { text: image.filename }),
      ]);
      this.gallery.prepend(figure);
    }
  }
}

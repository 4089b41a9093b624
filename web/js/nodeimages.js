// Images on nodes: outputs and previews drawn in a node's lower part, and the input image of
// LoadImage-style nodes with its upload button, drag-and-drop and mask painter.

import { LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { openMaskEditor } from "./maskeditor.js";
import { el, toast } from "./ui.js";

const IMAGE_AREA = 256;
const CACHE_LIMIT = 200;

/** "sub/dir/name.png [input]" -> ["sub/dir", "name.png"]. */
export function splitAnnotated(value) {
  const clean = String(value).replace(/\s*\[(input|output|temp)\]$/, "");
  const slash = clean.lastIndexOf("/");
  return slash < 0 ? ["", clean] : [clean.slice(0, slash), clean.slice(slash + 1)];
}

export class NodeImages {
  constructor(app) {
    this.app = app;
    this.cache = new Map(); // url -> HTMLImageElement
  }

  /** The loaded (or loading) image of `url`; the canvas redraws when it arrives. */
  imageFor(url) {
    let image = this.cache.get(url);
    if (!image) {
      image = new Image();
      image.onload = () => this.app.canvas.setDirty(true);
      image.src = url;
      this.cache.set(url, image);
      if (this.cache.size > CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value);
    }
    return image;
  }

  /** Show `urls` in the node's image area, growing the node to fit. */
  set(node, urls) {
    node.imageUrls = urls;
    for (const url of urls) this.imageFor(url);
    const top = this.contentBottom(node);
    if (node.size[1] < top + IMAGE_AREA * 0.75 || node.size[0] < IMAGE_AREA) {
      node.setSize([Math.max(node.size[0], IMAGE_AREA), Math.max(node.size[1], top + IMAGE_AREA)]);
    }
    this.app.canvas.setDirty(true, true);
  }

  /** Where the node's widgets (or slots) end, in node coordinates: its image area starts there. */
  contentBottom(node) {
    const widgets = node.widgets ?? [];
    if (widgets.length) {
      const last = widgets[widgets.length - 1];
      return (last.y || 0) + (last.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT + 4) + 4;
    }
    const slots = Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0);
    return slots * LiteGraph.NODE_SLOT_HEIGHT + 8;
  }

  /** Draw the node's images in a grid filling its image area. */
  draw(node, ctx) {
    const urls = node.imageUrls;
    if (!urls?.length || node.flags?.collapsed) return;
    const top = this.contentBottom(node);
    const [width, height] = node.size;
    const areaH = height - top - 6;
    if (areaH < 20) return;
    const count = urls.length;
    const columns = Math.ceil(Math.sqrt(count));
    const rows = Math.ceil(count / columns);
    const cellW = (width - 12) / columns;
    const cellH = areaH / rows;
    urls.forEach((url, i) => {
      const image = this.cache.get(url);
      if (!image?.complete || !image.naturalWidth) return;
      const fit = Math.min(cellW / image.naturalWidth, cellH / image.naturalHeight);
      const w = image.naturalWidth * fit;
      const h = image.naturalHeight * fit;
      const x = 6 + (i % columns) * cellW + (cellW - w) / 2;
      const y = top + Math.floor(i / columns) * cellH + (cellH - h) / 2;
      ctx.drawImage(image, x, y, w, h);
    });
  }

  /** Show the input image an upload widget names (when the server has it). */
  refreshUploadPreview(node) {
    const upload = node.widgets?.find((w) => w.options?.upload);
    if (!upload) return;
    if (!upload.value) {
      node.imageUrls = [];
      return;
    }
    if (upload.options.missing?.has(upload.value)) {
      node.imageUrls = []; // not on the server: no request that can only fail
      return;
    }
    const [subfolder, filename] = splitAnnotated(upload.value);
    this.set(node, [this.app.api.viewUrl({ filename, subfolder, type: "input" })]);
  }

  /** Let the person choose an image file to upload into `widget`. */
  pickUpload(node, widget) {
    const input = el("input", { type: "file", accept: "image/png,image/jpeg,image/webp,image/gif,image/bmp" });
    input.addEventListener("change", () => {
      if (input.files?.[0]) this.upload(node, widget, input.files[0]);
    });
    input.click();
  }

  /** Upload `file` to the input folder and select it in `widget`. */
  async upload(node, widget, file) {
    try {
      const answer = await this.app.api.uploadImage(file);
      const name = answer.subfolder ? `${answer.subfolder}/${answer.name}` : answer.name;
      if (!widget.options.values.includes(name)) widget.options.values = [...widget.options.values, name];
      widget.options.missing?.delete(name);
      widget.value = name;
      this.refreshUploadPreview(node);
      this.app.tracker.checkSoon();
      toast(`Uploaded ${name}`, "success", { timeout: 2500 });
    } catch (error) {
      toast(`Upload of ${file.name} failed: ${error.message}`, "error");
    }
  }

  /** Paint a mask on the widget's image; the masked copy is uploaded and selected. */
  editMask(node, widget) {
    const [subfolder, filename] = splitAnnotated(widget.value);
    const ref = { filename, subfolder, type: "input" };
    openMaskEditor(this.app.api, ref, async (answer) => {
      const name = answer.subfolder ? `${answer.subfolder}/${answer.name}` : answer.name;
      if (!widget.options.values.includes(name)) widget.options.values = [...widget.options.values, name];
      widget.options.missing?.delete(name);
      widget.value = name;
      this.cache.clear();
      this.refreshUploadPreview(node);
      this.app.tracker.checkSoon();
    });
  }
}

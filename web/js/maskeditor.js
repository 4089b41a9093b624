// A small mask painter for LoadImage inputs: paint where the mask should be 1, then save.
//
// The mask travels as the alpha channel, as in ComfyUI: LoadImage's MASK is 1 - alpha, so painted
// pixels get alpha 0. POST /upload/mask copies that alpha into the original image under a new name.

import { el, showDialog, toast } from "./ui.js";

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${url}`));
    image.src = url;
  });
}

/** Open the painter on input image `ref`; `onSaved(answer)` gets the upload answer {name, subfolder, type}. */
export async function openMaskEditor(api, ref, onSaved) {
  let image;
  try {
    image = await loadImage(api.viewUrl(ref));
  } catch (error) {
    toast(error.message, "error");
    return;
  }
  const { naturalWidth: width, naturalHeight: height } = image;
  const photo = el("canvas.mask-photo", { width, height });
  const mask = el("canvas.mask-paint", { width, height });
  const photoCtx = photo.getContext("2d", { willReadFrequently: true });
  photoCtx.drawImage(image, 0, 0);
  const maskCtx = mask.getContext("2d");
  // an existing mask (transparent pixels) shows as already painted
  const pixels = photoCtx.getImageData(0, 0, width, height);
  const existing = maskCtx.createImageData(width, height);
  for (let i = 3; i < pixels.data.length; i += 4) {
    if (pixels.data[i] < 255) {
      existing.data[i - 3] = 255;
      existing.data[i] = 255 - pixels.data[i];
    }
    pixels.data[i] = 255;
  }
  photoCtx.putImageData(pixels, 0, 0);
  maskCtx.putImageData(existing, 0, 0);

  const size = el("input", { type: "range", min: 1, max: Math.max(8, Math.round(Math.max(width, height) / 4)), value: Math.max(4, Math.round(Math.max(width, height) / 20)), "aria-label": "Brush size" });
  const erase = el("input", { type: "checkbox", "aria-label": "Erase" });
  let painting = false;
  let last = null;
  const toImage = (e) => {
    const rect = mask.getBoundingClientRect();
    return [(e.clientX - rect.left) * (width / rect.width), (e.clientY - rect.top) * (height / rect.height)];
  };
  const stroke = (from, to) => {
    maskCtx.globalCompositeOperation = erase.checked ? "destination-out" : "source-over";
    maskCtx.strokeStyle = "rgb(255, 0, 0)";
    maskCtx.lineCap = "round";
    maskCtx.lineWidth = Number(size.value);
    maskCtx.beginPath();
    maskCtx.moveTo(...from);
    maskCtx.lineTo(...to);
    maskCtx.stroke();
  };
  mask.addEventListener("pointerdown", (e) => {
    painting = true;
    mask.setPointerCapture(e.pointerId);
    last = toImage(e);
    stroke(last, last);
  });
  mask.addEventListener("pointermove", (e) => {
    if (!painting) return;
    const point = toImage(e);
    stroke(last, point);
    last = point;
  });
  mask.addEventListener("pointerup", () => {
    painting = false;
  });

  const save = async () => {
    const out = el("canvas", { width, height });
    const outCtx = out.getContext("2d");
    outCtx.drawImage(photo, 0, 0);
    const result = outCtx.getImageData(0, 0, width, height);
    const painted = maskCtx.getImageData(0, 0, width, height).data;
    for (let i = 3; i < result.data.length; i += 4) result.data[i] = 255 - painted[i];
    outCtx.putImageData(result, 0, 0);
    const blob = await new Promise((resolve) => out.toBlob(resolve, "image/png"));
    const stem = ref.filename.replace(/\.[^.]+$/, "").replace(/-mask(-\d+)?$/, "");
    try {
      const answer = await api.uploadMask(blob, `${stem}-mask.png`, ref);
      onSaved(answer);
      dialog.closest(".backdrop")?.close();
    } catch (error) {
      toast(`Saving the mask failed: ${error.message}`, "error");
    }
  };
  const dialog = el("div.mask-editor", {}, [
    el("div.mask-stack", { style: `aspect-ratio:${width}/${height}` }, [photo, mask]),
    el("div.buttons", {}, [
      el("label", {}, ["Brush ", size]),
      el("label", {}, [erase, " Erase"]),
      el("button", { onclick: () => maskCtx.clearRect(0, 0, width, height) }, ["Clear"]),
      el("button.primary", { onclick: save }, ["Save mask"]),
    ]),
  ]);
  showDialog(`Mask: ${ref.filename}`, dialog, { wide: true });
}

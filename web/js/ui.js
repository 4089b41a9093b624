// Small DOM helpers: element builder, toasts, dialogs.

/** Create an element: el("button.primary#queue", {onclick}, ["Queue"]). */
export function el(spec, attrs = {}, children = []) {
  const [, tag = "div", rest = ""] = spec.match(/^([a-z0-9]*)(.*)$/i);
  const node = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) ?? []) {
    if (part[0] === ".") node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show a short message in the corner; kind is "info", "error" or "success". */
export function toast(message, kind = "info", { timeout = 5000, details } = {}) {
  const box = document.getElementById("toasts");
  const item = el(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, [
    el("span.message", { text: message }),
    details ? el("pre.details", { text: details }) : null,
    el("button.close", { title: "Dismiss", "aria-label": "Dismiss", onclick: () => item.remove() }, ["×"]),
  ]);
  box.append(item);
  if (timeout) setTimeout(() => item.remove(), timeout);
  return item;
}

/** A modal dialog with `content`; resolves when closed. */
export function showDialog(title, content, { wide = false } = {}) {
  return new Promise((resolve) => {
    const close = () => {
      backdrop.remove();
      document.removeEventListener("keydown", onKey, true);
      resolve();
    };
    const onKey = (e) => {
      if (e.key === "Escape") {
        e.stopPropagation();
        close();
      }
    };
    const backdrop = el("div.backdrop", { onpointerdown: (e) => e.target === backdrop && close() }, [
      el(`div.dialog${wide ? ".wide" : ""}`, { role: "dialog", "aria-label": title }, [
        el("header", {}, [el("h2", { text: title }), el("button.close", { title: "Close", onclick: close }, ["×"])]),
        content,
      ]),
    ]);
    document.addEventListener("keydown", onKey, true);
    document.body.append(backdrop);
    backdrop.close = close;
  });
}

/** Ask for a line of text in a small dialog; resolves to the text, or null when cancelled. */
export function askText(title, value = "", { okLabel = "OK" } = {}) {
  return new Promise((resolve) => {
    let answered = null;
    const input = el("input.text", { type: "text", "aria-label": title });
    input.value = value;
    const form = el("form.ask", {
      onsubmit: (e) => {
        e.preventDefault();
        answered = input.value.trim() || null;
        form.closest(".backdrop")?.close();
      },
    }, [input, el("div.buttons", {}, [el("button.primary", { type: "submit" }, [okLabel])])]);
    showDialog(title, form).then(() => resolve(answered));
    requestAnimationFrame(() => {
      input.focus();
      input.select();
    });
  });
}

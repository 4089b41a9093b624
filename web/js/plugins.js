// What became of the plugins: a notice over the canvas when one failed (or lacks a requirement, or
// its browser extension broke), and the Plugins tab listing every plugin with its status, cause,
// load time, nodes and web extension scripts.

import { el } from "./ui.js";

const DISMISSED_KEY = "diffloom.pluginNoticeDismissed";
const STATUS_ORDER = { failed: 0, loaded: 1, disabled: 2 };

function seconds(value) {
  const s = Number(value) || 0;
  return s < 0.01 ? "<0.01 s" : `${s.toFixed(2)} s`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** One entry per plugin with a problem, failures first: [{plugin, kind, text}] from the server's report and the extension host. */
export function pluginProblems(report, host) {
  const problems = [];
  for (const plugin of report?.plugins ?? []) {
    if (plugin.status === "failed") {
      problems.push({ plugin: plugin.name, kind: "failed", text: plugin.cause || "failed to load" });
    } else if (plugin.status === "loaded" && plugin.missing_requirements?.length) {
      problems.push({
        plugin: plugin.name,
        kind: "requirements",
        text: `loaded, but requirements.txt lists packages that are not installed: ${plugin.missing_requirements.join(", ")}`,
      });
    }
  }
  for (const script of report?.prestartup ?? []) {
    if (script.error) problems.push({ plugin: script.name, kind: "prestartup", text: `prestartup script failed: ${script.error}` });
  }
  const byPlugin = new Map(); // host.failures lists script failures by address first: the same text on every load
  for (const failure of host.failures) {
    const name = failure.plugin || "(unknown plugin)";
    byPlugin.set(name, [...(byPlugin.get(name) ?? []), failure]);
  }
  for (const [plugin, failures] of byPlugin) {
    const scripts = failures.filter((f) => f.hook === "import").length;
    const hooks = failures.length - scripts;
    const counts = [scripts ? `${plural(scripts, "script")} did not load` : "", hooks ? `${plural(hooks, "hook")} threw` : ""];
    const first = failures[0];
    const where = first.hook === "import" ? first.script.split("/").pop() : `${first.extension || "listener"} ${first.hook}`;
    problems.push({
      plugin,
      kind: "extension",
      text: `web extension: ${counts.filter(Boolean).join(", ")} (first: ${where}: ${first.message})`,
    });
  }
  return problems;
}

export class PluginPanels {
  constructor(app, { panel, notice, badge, tab }) {
    this.app = app;
    this.panel = panel;
    this.notice = notice;
    this.badge = badge;
    this.tab = tab;
    this.report = null;
    this.reportError = "";
  }

  /** Fetch the server's plugin report; a server without one gives an empty panel, not an error. */
  async fetchReport() {
    try {
      this.report = await this.app.api.pluginReport();
      this.reportError = "";
    } catch (error) {
      this.report = null;
      this.reportError = error.message;
    }
  }

  /** Render on the next frame (failures may come in bursts, e.g. one per node). */
  renderSoon() {
    if (this._pending) return;
    this._pending = requestAnimationFrame(() => {
      this._pending = null;
      this.render();
    });
  }

  /** Fill the Plugins tab and show the notice when something went wrong. */
  render() {
    const problems = pluginProblems(this.report, this.app.extensions);
    const troubled = new Set(problems.map((p) => p.plugin)).size;
    this.badge.textContent = String(troubled);
    this.badge.title = `${plural(troubled, "plugin")} with problems`;
    this.badge.hidden = troubled === 0;
    this.renderPanel();
    this.renderNotice(problems);
  }

  renderNotice(problems) {
    const signature = JSON.stringify(problems);
    if (!problems.length || sessionStorage.getItem(DISMISSED_KEY) === signature) {
      this.notice.hidden = true;
      this.notice.replaceChildren();
      return;
    }
    const failedPlugins = new Set(problems.filter((p) => p.kind === "failed").map((p) => p.plugin)).size;
    const title = failedPlugins
      ? `${plural(failedPlugins, "plugin")} failed to load`
      : "Some plugins have problems";
    const dismiss = () => {
      sessionStorage.setItem(DISMISSED_KEY, signature);
      this.notice.hidden = true;
    };
    this.notice.replaceChildren(
      el("header", {}, [
        el("strong", { text: title }),
        el("span.actions", {}, [
          el("button.link", { onclick: () => this.showTab() }, ["Show all plugins"]),
          el("button.close", { title: "Dismiss", "aria-label": "Dismiss", onclick: dismiss }, ["×"]),
        ]),
      ]),
      el("ul", {}, problems.map((p) => el("li", { dataset: { plugin: p.plugin, kind: p.kind } }, [
        el("strong", { text: p.plugin }),
        el("span", { text: ` ${p.text}` }),
      ]))),
      el("p.hint", { text: "Each plugin loads on its own: the others and the editor still work." }),
    );
    this.notice.hidden = false;
  }

  showTab() {
    this.tab.click();
  }

  renderPanel() {
    const host = this.app.extensions;
    const plugins = [...(this.report?.plugins ?? [])]
      .map((plugin, index) => ({ plugin, index }))
      .sort((a, b) => (STATUS_ORDER[a.plugin.status] ?? 3) - (STATUS_ORDER[b.plugin.status] ?? 3) || a.index - b.index)
      .map(({ plugin }) => plugin);
    const parts = [];
    if (this.reportError) {
      parts.push(el("p.error", { text: `The server gave no plugin report: ${this.reportError}` }));
    } else if (this.report) {
      const count = (status) => plugins.filter((p) => p.status === status).length;
      parts.push(el("p.summary", {
        text: `${count("loaded")} loaded, ${count("failed")} failed, ${count("disabled")} disabled`
          + ` · plugin API ${this.report.api_version ?? "?"}`,
      }));
    }
    if (this.report && !plugins.length) {
      parts.push(el("p.empty", { text: "No plugins: drop one into custom_nodes/ and restart the server." }));
    }
    for (const plugin of plugins) parts.push(this.pluginItem(plugin, host));
    const known = new Set(plugins.map((p) => p.name));
    const strays = host.failures.filter((f) => !known.has(f.plugin));
    if (strays.length) {
      parts.push(el("div.plugin-item.failed", {}, [
        el("div.row", {}, [el("strong", { text: "Other extensions" })]),
        el("ul.problems", {}, strays.map((f) => el("li", { text: `${f.script || f.extension}: ${f.hook}: ${f.message}` }))),
      ]));
    }
    this.panel.replaceChildren(...parts);
  }

  pluginItem(plugin, host) {
    const scripts = host.scripts.filter((s) => s.plugin === plugin.name);
    const failures = host.failuresOf(plugin.name);
    const problem = plugin.status === "failed" || failures.length || plugin.missing_requirements?.length;
    const lines = [];
    if (plugin.cause) lines.push(el("p.cause", { text: plugin.cause }));
    for (const warning of plugin.warnings ?? []) lines.push(el("p.warning", { text: warning }));
    if (plugin.nodes?.length) {
      lines.push(el("details.nodes", {}, [
        el("summary", { text: `${plural(plugin.nodes.length, "node")}${plugin.style ? ` (${plugin.style})` : ""}` }),
        el("ul", {}, plugin.nodes.map((name) => el("li", { text: name }))),
      ]));
    }
    if (scripts.length) {
      const broken = scripts.filter((s) => s.status === "failed").length;
      lines.push(el("p.web", {
        text: `web extension: ${plural(scripts.length, "script")}${broken ? `, ${broken} failed` : " loaded"}`,
      }));
    }
    if (failures.length) {
      lines.push(el("ul.problems", {}, failures.map((f) => el("li", {
        text: `${f.hook === "import" ? f.script : `${f.extension || f.script} in ${f.hook}`}: ${f.message}`
          + (f.count > 1 ? ` (${f.count} times)` : ""),
      }))));
    }
    if (plugin.traceback) {
      lines.push(el("details", {}, [el("summary", { text: "Traceback" }), el("pre", { text: plugin.traceback })]));
    }
    return el(`div.plugin-item.${plugin.status}${problem ? ".problem" : ""}`, { dataset: { plugin: plugin.name } }, [
      el("div.row", {}, [
        el("strong.name", { text: plugin.name, title: plugin.path }),
        el(`span.status.${plugin.status}`, { text: plugin.status }),
        el("span.seconds", { text: plugin.status === "disabled" ? "" : seconds(plugin.seconds), title: "import time" }),
      ]),
      ...lines,
    ]);
  }
}

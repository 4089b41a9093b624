// Workflow files: open (file picker, drag-and-drop, PNG metadata), save, export as API format,
// and the server's workflows/ folder.

import { readPngText } from "./png.js";
import { askText, el, toast } from "./ui.js";
import { downloadJson, serializeGraph } from "./workflow.js";

export class WorkflowFiles {
  constructor(app) {
    this.app = app;
  }

  /** Open a workflow file: JSON (UI or API format) or a PNG carrying one. */
  async openFile(file) {
    try {
      if (file.type === "image/png" || file.name.toLowerCase().endsWith(".png")) {
        const texts = await readPngText(await file.arrayBuffer());
        const raw = texts.workflow ?? texts.prompt;
        if (!raw) throw new Error("this PNG carries no 'workflow' or 'prompt' text chunk");
        this.app.loadWorkflowData(JSON.parse(raw), file.name);
      } else {
        this.app.loadWorkflowData(JSON.parse(await file.text()), file.name.replace(/\.json$/i, ""));
      }
      toast(`Opened ${file.name}`, "success", { timeout: 2500 });
    } catch (error) {
      toast(`Could not open ${file.name}: ${error.message}`, "error");
    }
  }

  /** Ask for a name and download the workflow in the saved form. */
  async save() {
    const suggested = this.app.workflowName.replace(/[^\w.-]+/g, "_").replace(/^_+|_+$/g, "") || "workflow";
    const name = await askText("Save workflow as", suggested.endsWith(".json") ? suggested : `${suggested}.json`,
      { okLabel: "Save" });
    if (!name) return;
    const filename = name.endsWith(".json") ? name : `${name}.json`;
    downloadJson(serializeGraph(this.app.graph), filename);
    this.app.setWorkflowName(filename.replace(/\.json$/, ""));
    this.app.onModified(); // the session remembers the new name
  }

  /** Download the API-format prompt the server makes of this workflow. */
  async exportApi() {
    try {
      const apiPrompt = await this.app.api.convertWorkflow(serializeGraph(this.app.graph));
      const base = this.app.workflowName.replace(/[^\w.-]+/g, "_") || "workflow";
      downloadJson(apiPrompt, `${base}_api.json`);
    } catch (error) {
      this.app.reportQueueError(error);
    }
  }

  /** Fill the Workflows menu with the server's workflows/ folder. */
  async refreshList() {
    const menu = document.getElementById("workflow-menu");
    let names = [];
    try {
      const answer = await this.app.api.listWorkflows();
      names = Array.isArray(answer) ? answer : answer.workflows ?? [];
    } catch (error) {
      menu.replaceChildren(el("p.empty", { text: `Workflow list unavailable (${error.message})` }));
      return;
    }
    const items = names.map((entry) => {
      const name = typeof entry === "string" ? entry : entry.name;
      return el("button.menu-item", { role: "menuitem", onclick: () => this.openFromServer(name) }, [name]);
    });
    menu.replaceChildren(...(items.length ? items : [el("p.empty", { text: "No workflows in workflows/" })]));
  }

  /** Open one workflow of the server's workflows/ folder. */
  async openFromServer(name) {
    document.getElementById("workflow-menu").hidden = true;
    try {
      this.app.loadWorkflowData(await this.app.api.getWorkflow(name), name.replace(/\.json$/i, ""));
    } catch (error) {
      toast(`Could not open ${name}: ${error.message}`, "error");
    }
  }

  /** Files dropped on the canvas: images onto an upload node, anything else opens as a workflow. */
  bindDrops() {
    const target = this.app.canvasElement.parentElement;
    target.addEventListener("dragover", (e) => {
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    });
    target.addEventListener("drop", (e) => {
      e.preventDefault();
      const file = e.dataTransfer?.files?.[0];
      if (!file) return;
      const node = this.nodeAtClient(e.clientX, e.clientY);
      const upload = node?.widgets?.find((w) => w.options?.upload);
      if (upload && file.type.startsWith("image/")) {
        this.app.images.upload(node, upload, file);
      } else {
        this.openFile(file);
      }
    });
  }

  /** The node under a screen position, or null. */
  nodeAtClient(clientX, clientY) {
    const rect = this.app.canvasElement.getBoundingClientRect();
    const [x, y] = this.app.canvas.ds.convertCanvasToOffset([clientX - rect.left, clientY - rect.top]);
    return this.app.graph.getNodeOnPos(x, y) ?? null;
  }
}

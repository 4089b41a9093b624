// The example plugin's browser extension: the editor imports every .js file /extensions lists.
// It uses the extension interface ComfyUI extensions use (see custom_nodes/README.md for what the
// editor supports): app.registerExtension with hooks, and api events, including the messages
// nodes send with graph.api.send() (or ComfyUI's PromptServer.instance.send_sync).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
  name: "diffloom.example_pack",

  setup() {
    // Which node runs now: "executing" gives its id (null when the prompt is done).
    let running = null;
    api.addEventListener("executing", ({ detail }) => {
      running = detail;
    });
    api.addEventListener("execution_start", () => {
      for (const node of app.graph.nodes) if (node.comfyClass === "ExampleCountdown") node.remaining = undefined;
    });
    // ExampleCountdown sends "example_pack.countdown" after every step.
    api.addEventListener("example_pack.countdown", ({ detail }) => {
      console.info(`[example_pack] ${detail.remaining} step(s) to go`);
      const node = running == null ? null : app.graph.getNodeById(Number(running));
      if (node?.comfyClass !== "ExampleCountdown") return;
      node.remaining = detail.remaining;
      app.canvas.setDirty(true);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "ExampleCountdown") {
      // Draw the steps still to go in the title bar, after what the node already draws.
      const previousDraw = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        previousDraw?.apply(this, arguments);
        if (this.remaining === undefined || this.flags?.collapsed) return;
        ctx.save();
        ctx.font = "12px sans-serif";
        ctx.textAlign = "right";
        ctx.fillStyle = this.remaining ? "#e6c27a" : "#8fd19e";
        ctx.fillText(this.remaining ? `${this.remaining} to go` : "done", this.size[0] - 10, -9);
        ctx.restore();
      };
    }
    if (nodeData.name === "ExampleShowText") {
      // Put the first words of the shown text in the node's title.
      const previous = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        previous?.apply(this, arguments);
        const text = String(output?.text?.[0] ?? "");
        this.title = text ? `Text: ${text.slice(0, 24)}` : nodeData.display_name;
      };
    }
  },
});

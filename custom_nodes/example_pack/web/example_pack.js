// The example plugin's browser extension: the editor loads every .js file that /extensions lists.
// It uses the editor's extension interface (the one ComfyUI extensions use): app.registerExtension
// with hooks, and api events for the messages nodes send with graph.api.send().
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

app.registerExtension({
  name: "diffloom.example_pack",

  setup() {
    // ExampleCountdown sends "example_pack.countdown" after every step.
    api.addEventListener("example_pack.countdown", ({ detail }) => {
      console.info(`[example_pack] ${detail.remaining} step(s) to go`);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "ExampleShowText") return;
    // Put the first words of the shown text in the node's title.
    const previous = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      previous?.apply(this, arguments);
      const text = String(output?.text?.[0] ?? "");
      this.title = text ? `Text: ${text.slice(0, 24)}` : nodeData.display_name;
    };
  },
});

// Uses every hook the editor supports and records what happened in window.fixtureMarks for the test.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const marks = {
  order: [], initGotApp: false, created: 0, loaded: [], events: [], executed: [], graphNodesAtSetup: -1,
  typesAtRegistration: 0, previews: [], statusSeen: 0, statusDetail: null, executing: [],
};
window.fixtureMarks = marks;

app.registerExtension({
  name: "fixture.greeting",

  init(appArgument) {
    marks.order.push("init");
    marks.initGotApp = appArgument === app;
  },

  addCustomNodeDefs(defs) {
    marks.order.push("addCustomNodeDefs");
    marks.typesAtRegistration = Object.keys(defs).length;
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!marks.order.includes("beforeRegisterNodeDef")) marks.order.push("beforeRegisterNodeDef");
    if (nodeData.name !== "FixtureGreeting") return;
    nodeType.title = "Greeting (styled)";
    nodeType.color = "#1f5f3a";
    nodeType.bgcolor = "#2d7a4f";
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.properties.fixtureStyled = true;
      return result;
    };
    nodeType.prototype.onExecuted = function (output) {
      marks.executed.push({ node: this.id, output });
      this.title = `Greeting: ${output?.text?.[0] ?? "?"}`;
    };
  },

  registerCustomNodes() {
    marks.order.push("registerCustomNodes");
  },

  nodeCreated(node) {
    if (node.comfyClass === "FixtureGreeting") marks.created += 1;
  },

  loadedGraphNode(node) {
    marks.loaded.push(node.type);
  },

  setup() {
    marks.order.push("setup");
    marks.graphNodesAtSetup = app.graph.nodes.length;
    api.addEventListener("fixture.greeting", ({ detail }) => {
      marks.events.push(detail);
    });
    api.addEventListener("b_preview", ({ detail }) => {
      marks.previews.push(detail instanceof Blob ? detail.type : typeof detail);
    });
    api.addEventListener("executing", ({ detail }) => {
      marks.executing.push(detail);
    });
    const once = ({ detail }) => {
      marks.statusSeen += 1;
      marks.statusDetail = detail;
      api.removeEventListener("status", once);
    };
    api.addEventListener("status", once);
    document.body.dataset.fixtureSetup = "done";
  },
});

// Registers an extension whose every hook throws, and websocket listeners that throw.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const fail = (where) => () => {
  throw new Error(`fixture hook ${where} exploded`);
};

api.addEventListener("fixture.greeting", fail("listener"));
api.addEventListener("executing", fail("executing listener"));

app.registerExtension({
  name: "fixture.throwing",
  init: fail("init"),
  async setup() {
    throw new Error("fixture hook setup exploded");
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "KSampler") {
      // a patched method that throws inside litegraph's own work (creating every KSampler)
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        onNodeCreated?.apply(this, arguments);
        throw new Error("fixture patched onNodeCreated exploded");
      };
    }
    throw new Error("fixture hook beforeRegisterNodeDef exploded");
  },
  nodeCreated: fail("nodeCreated"),
  loadedGraphNode: fail("loadedGraphNode"),
});

// A second extension with the same name is refused.
app.registerExtension({ name: "fixture.throwing" });

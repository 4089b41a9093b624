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
  beforeRegisterNodeDef: fail("beforeRegisterNodeDef"),
  nodeCreated: fail("nodeCreated"),
  loadedGraphNode: fail("loadedGraphNode"),
});

// A second extension with the same name is refused.
app.registerExtension({ name: "fixture.throwing" });

// ComfyUI's module path for extensions: `import { app } from "../../scripts/app.js"`.
// The object is diffloom's own (web/js/compat.js); custom_nodes/README.md lists what it supports.
export { comfyApp as app } from "../js/compat.js";

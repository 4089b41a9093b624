// ComfyUI's module path for extensions: `import { api } from "../../scripts/api.js"`.
// The object is diffloom's own (web/js/compat.js); custom_nodes/README.md lists what it supports.
export { comfyApi as api } from "../js/compat.js";

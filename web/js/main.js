// Entry point: start the editor and make it reachable from the console as `window.diffloom`.

import { App } from "./app.js";
import { toast } from "./ui.js";

const app = new App();
window.diffloom = app;
app.start().catch((error) => {
  console.error(error);
  toast(`The editor could not start: ${error.message}`, "error", { timeout: 0 });
});

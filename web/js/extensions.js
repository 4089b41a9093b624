// Browser extensions of plugins: loading the scripts /extensions lists, keeping the extensions they
// register, and calling their hooks, each in isolation.
//
// A script that fails to load and a hook that throws are recorded (with the plugin they came from)
// and logged as a warning; the editor goes on. Hooks get the ComfyUI-style `app` as their last
// argument, as ComfyUI passes it.

const EXTENSION_URL = /\/extensions\/([^/\s?#]+)\/[^\s?#:)]*\.m?js/;

/** The plugin whose web folder served `url` (an /extensions/<plugin>/... address), or "". */
export function pluginOfUrl(url) {
  return String(url ?? "").match(EXTENSION_URL)?.[1] ?? "";
}

/** The innermost /extensions/... script named in an error's stack, or "". */
export function scriptInStack(stack) {
  return String(stack ?? "").match(/(\/extensions\/[^\s?#:)]+\.m?js)/)?.[1] ?? "";
}

/** The /extensions/... script that made the current call (found on the call stack), or "". */
export function callerScript() {
  return scriptInStack(new Error().stack);
}

const LOAD_TIMEOUT_MS = 15000; // a script or a start-up hook that takes longer is reported; the editor goes on

/** `promise`, or a rejection naming `what` once `ms` have passed. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s; the editor went on without it`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function messageOf(error) {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

export class ExtensionHost {
  constructor() {
    this.extensions = [];
    this.sources = new Map(); // extension -> script URL it was registered from ("" when unknown)
    this.scripts = []; // [{url, plugin, status: "loaded" | "failed", error}]
    this.failures = []; // [{plugin, script, extension, hook, message, count}]
    this.facade = null; // the ComfyUI-style app handed to hooks
    this.onFailure = null; // called after a new failure is recorded
  }

  /** Add an extension ({name, ...hooks}); a missing or taken name is refused. */
  register(extension, source = callerScript()) {
    if (!extension || typeof extension !== "object") {
      throw new TypeError(`registerExtension: expected an object {name, ...hooks}, got ${typeof extension}`);
    }
    const { name } = extension;
    if (typeof name !== "string" || !name) {
      throw new TypeError("registerExtension: the extension has no name (give it a unique `name` string)");
    }
    if (this.extensions.some((e) => e.name === name)) {
      throw new Error(`registerExtension: an extension named '${name}' is already registered`);
    }
    this.extensions.push(extension);
    this.sources.set(extension, source);
  }

  /** Import every script (in parallel); one that fails is recorded, the others load. */
  async load(urls) {
    await Promise.all(urls.map(async (url) => {
      const entry = { url, plugin: pluginOfUrl(url), status: "loaded", error: "" };
      this.scripts.push(entry);
      try {
        await within(import(url), LOAD_TIMEOUT_MS, "loading the script");
      } catch (error) {
        entry.status = "failed";
        entry.error = messageOf(error);
        this.fail({ plugin: entry.plugin, script: url, extension: "", hook: "import", error });
      }
    }));
    this.scripts.sort((a, b) => a.url.localeCompare(b.url));
    const imports = this.failures.filter((f) => f.hook === "import").sort((a, b) => a.script.localeCompare(b.script));
    this.failures = [...imports, ...this.failures.filter((f) => f.hook !== "import")];
    // scripts load in parallel and register in whatever order they arrive: call hooks in the listed order
    const rank = (extension) => {
      const index = urls.indexOf(this.sources.get(extension));
      return index < 0 ? urls.length : index;
    };
    this.extensions.sort((a, b) => rank(a) - rank(b));
  }

  /** Record a failure once per (script, extension, hook); later repeats only count. */
  fail({ plugin, script, extension, hook, error }) {
    const message = messageOf(error);
    const known = this.failures.find((f) => f.script === script && f.extension === extension && f.hook === hook);
    if (known) {
      known.count += 1;
      return;
    }
    this.failures.push({ plugin, script, extension, hook, message, count: 1 });
    const who = extension ? `extension '${extension}'` : `script ${script}`;
    const where = hook === "import" ? "while loading" : `in ${hook}()`;
    console.warn(`diffloom: ${who}${plugin ? ` of plugin '${plugin}'` : ""} failed ${where}: ${message}`,
      error instanceof Error ? error : "");
    this.onFailure?.();
  }

  /** Record an error thrown by extension code the editor called indirectly (a patched node method). */
  failFromError(hook, error) {
    const script = scriptInStack(error?.stack);
    this.fail({ plugin: pluginOfUrl(script), script, extension: "", hook, error });
  }

  _failHook(extension, hook, error) {
    const script = this.sources.get(extension) ?? "";
    this.fail({ plugin: pluginOfUrl(script), script, extension: extension.name, hook, error });
  }

  /** Await `hook(...args, app)` of every extension that has it (all at once, as ComfyUI does). */
  async invoke(hook, ...args) {
    const callers = this.extensions.filter((e) => typeof e[hook] === "function");
    if (!callers.length) return [];
    return Promise.all(callers.map(async (extension) => {
      try {
        return await within(Promise.resolve().then(() => extension[hook](...args, this.facade)),
          LOAD_TIMEOUT_MS, `${hook}()`);
      } catch (error) {
        this._failHook(extension, hook, error);
        return undefined;
      }
    }));
  }

  /**
   * Offer a node class to every extension's beforeRegisterNodeDef, then guard the methods they put on
   * its prototype: litegraph calls them deep inside its own work (creating, drawing, loading nodes),
   * where one that throws would break the editor. A guarded method that throws is reported and
   * returns undefined.
   */
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!this.extensions.some((e) => typeof e.beforeRegisterNodeDef === "function")) return;
    const proto = nodeType.prototype;
    const before = new Map(Object.getOwnPropertyNames(proto).map((key) => [key, Object.getOwnPropertyDescriptor(proto, key).value]));
    await this.invoke("beforeRegisterNodeDef", nodeType, nodeData);
    for (const key of Object.getOwnPropertyNames(proto)) {
      const { value, writable } = Object.getOwnPropertyDescriptor(proto, key);
      if (key === "constructor" || !writable || typeof value !== "function" || value === before.get(key)) continue;
      proto[key] = this.guard(value, `${key} of ${nodeData?.name ?? nodeType.type ?? "a node"}`);
    }
  }

  /** `fn` wrapped so that an exception is reported (attributed by its stack) instead of thrown. */
  guard(fn, hook) {
    const host = this;
    const guarded = function (...args) {
      try {
        const result = fn.apply(this, args);
        if (result && typeof result.catch === "function") return result.catch((error) => host.failFromError(hook, error));
        return result;
      } catch (error) {
        host.failFromError(hook, error);
        return undefined;
      }
    };
    guarded.unguarded = fn;
    return guarded;
  }

  /** Call `hook(...args, app)` of every extension without waiting (node hooks run inside litegraph's calls). */
  invokeSync(hook, ...args) {
    for (const extension of this.extensions) {
      if (typeof extension[hook] !== "function") continue;
      try {
        const result = extension[hook](...args, this.facade);
        if (result && typeof result.catch === "function") result.catch((error) => this._failHook(extension, hook, error));
      } catch (error) {
        this._failHook(extension, hook, error);
      }
    }
  }

  /** Script and hook failures of one plugin. */
  failuresOf(plugin) {
    return this.failures.filter((f) => f.plugin === plugin);
  }
}

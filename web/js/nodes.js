// litegraph node types built from /object_info, and the few editor-only nodes (Note, Reroute).
//
// Every widget-backed input also gets an input slot marked {widget: {name}}, so a link can be
// dropped on the widget to turn it into an input (litegraph then disables the widget). Saved
// workflows keep widget values keyed by input name; lists in ComfyUI's positional form load too.

import { LGraphNode, LiteGraph } from "../vendor/litegraph/litegraph.es.js";
import { addInputWidget, CONTROL_MODES, socketTypeOf, widgetKindOf } from "./widgets.js";

const OPTIONAL_SHAPE = 7; // litegraph's RenderShape.HollowCircle
const UPLOAD_VALUES = new Set(["image", "upload", "video", "audio", "file"]);
export const VIRTUAL_TYPES = new Set(["Note", "MarkdownNote", "Reroute", "PrimitiveNode"]);

/** [{name, spec, optional}] of a node definition, required first, in `input_order` when given. */
export function orderedInputs(def) {
  const result = [];
  for (const section of ["required", "optional"]) {
    const specs = def.input?.[section] ?? {};
    const listed = def.input_order?.[section] ?? [];
    const names = listed.filter((n) => n in specs);
    for (const name of Object.keys(specs)) if (!names.includes(name)) names.push(name);
    for (const name of names) result.push({ name, spec: specs[name], optional: section === "optional" });
  }
  return result;
}

function isWidgetInput(spec) {
  const found = widgetKindOf(spec);
  return found !== null && !found.config.forceInput;
}

/** Build the slots and widgets of a fresh node from its definition. */
function buildNode(node, def, hooks) {
  for (const { name, spec, optional } of orderedInputs(def)) {
    const type = socketTypeOf(spec);
    const extra = {};
    if (optional) extra.shape = OPTIONAL_SHAPE;
    const config = Array.isArray(spec) && spec[1] && typeof spec[1] === "object" ? spec[1] : {};
    if (config.tooltip) extra.tooltip = config.tooltip;
    if (isWidgetInput(spec)) {
      const widget = addInputWidget(node, name, spec, hooks);
      extra.widget = { name: widget.name };
    }
    node.addInput(name, type, extra);
  }
  const names = def.output_name ?? def.output ?? [];
  (def.output ?? []).forEach((type, i) => {
    const outType = Array.isArray(type) ? "COMBO" : String(type);
    const extra = def.output_is_list?.[i] ? { shape: LiteGraph.GRID_SHAPE } : {};
    if (def.output_tooltips?.[i]) extra.tooltip = def.output_tooltips[i];
    node.addOutput(names[i] ?? outType, outType, extra);
  });
}

/** Move the node's input slots into schema order, adding missing ones and keeping links valid. */
function reconcileInputs(node) {
  if (typeof node.constructor.freshInputs !== "function") return;
  const current = node.inputs ?? [];
  const byName = new Map(current.map((slot) => [slot.widget?.name ?? slot.name, slot]));
  const fresh = node.constructor.freshInputs();
  const next = [];
  for (const template of fresh) {
    const old = byName.get(template.name);
    if (old) {
      byName.delete(template.name);
      template.link = old.link ?? null;
      if (old.label) template.label = old.label;
    }
    next.push(template);
  }
  for (const leftover of byName.values()) next.push(leftover); // inputs this server does not declare
  node.inputs = next;
  next.forEach((slot, index) => {
    if (slot.link == null) return;
    const link = node.graph?._links?.get(slot.link);
    if (link) link.target_slot = index;
  });
}

/** Values keyed by widget name from a positional list, skipping control and upload entries that may or may not be there. */
export function alignWidgetValues(widgets, values) {
  const result = {};
  let j = 0;
  for (const widget of widgets) {
    if (j >= values.length) break;
    const value = values[j];
    if (widget.controls) {
      if (typeof value === "boolean" || CONTROL_MODES.includes(value) || value === "increment-wrap") {
        result[widget.name] = typeof value === "boolean" ? (value ? "randomize" : "fixed") : value;
        j++;
      }
      continue;
    }
    if (widget.type === "button") {
      if (value === null || UPLOAD_VALUES.has(value)) j++;
      continue;
    }
    result[widget.name] = value;
    j++;
    // the upload button's stored value follows its combo in ComfyUI files
    if (widget.options?.upload && (values[j] === null || UPLOAD_VALUES.has(values[j]))) j++;
  }
  return result;
}

/** Set widget values from a dict (ours) or a positional list (ComfyUI's). */
export function applyWidgetValues(node, values) {
  if (!values || !node.widgets) return;
  const widgets = node.widgets.filter((w) => w.serialize !== false);
  const byName = Array.isArray(values) ? alignWidgetValues(widgets, values) : values;
  for (const widget of widgets) {
    if (!(widget.name in byName)) continue;
    let value = byName[widget.name];
    if (value === null || value === undefined) continue;
    if (widget.type === "combo" && widget.options?.values && !widget.options.values.includes(value)) {
      // keep a missing model or image name visible (and marked): the user sees what the file asked for
      widget.options.values = [...widget.options.values, value];
      widget.options.missing = new Set([...(widget.options.missing ?? []), value]);
    }
    if (widget.type === "number") value = Number(value);
    widget.value = value;
  }
}

/** Drop the empty and run-time fields litegraph writes for every slot (error marks are not part of a workflow). */
export function tidySerialized(o) {
  for (const slots of [o.inputs, o.outputs]) {
    for (const slot of slots ?? []) {
      for (const [key, value] of Object.entries(slot)) {
        if (value === null || value === undefined || key === "hasErrors") delete slot[key];
      }
      if (slot.links === undefined && o.outputs?.includes(slot)) slot.links = [];
      if ("link" in slot === false && o.inputs?.includes(slot)) slot.link = null;
    }
  }
  for (const key of ["showAdvanced"]) if (o[key] === null || o[key] === undefined) delete o[key];
}

/** The node's widget values keyed by widget name. */
export function widgetValuesOf(node) {
  const values = {};
  for (const widget of node.widgets ?? []) {
    if (widget.serialize === false || widget.type === "button") continue;
    values[widget.name] = widget.value;
  }
  return values;
}

function makeNodeClass(classType, def, hooks) {
  class ServerNode extends LGraphNode {
    static comfyClass = classType;
    static nodeDef = def;
    static title = def.display_name || classType;

    /** The input slots a fresh node has, in schema order (used to repair loaded files). */
    static freshInputs() {
      const probe = new LGraphNode("probe");
      probe.widgets = [];
      buildNode(probe, def, hooks);
      return probe.inputs.map((slot) => {
        const plain = { name: slot.name, type: slot.type, link: null };
        for (const key of ["shape", "widget", "tooltip"]) if (slot[key] !== undefined) plain[key] = slot[key];
        return plain;
      });
    }

    constructor(title) {
      super(title);
      this.serialize_widgets = true;
      this.comfyClass = classType;
      buildNode(this, def, hooks);
      this.properties["Node name for S&R"] = classType;
    }

    onNodeCreated() {
      const [w, h] = this.computeSize();
      this.setSize([Math.max(w, this.widgets?.length ? 300 : 220), h]);
      hooks.nodeCreated?.(this);
    }

    onConfigure(info) {
      reconcileInputs(this);
      applyWidgetValues(this, info.widgets_values);
      hooks.nodeConfigured?.(this, info);
    }

    onSerialize(o) {
      o.widgets_values = widgetValuesOf(this);
      tidySerialized(o);
    }

    onWidgetChanged(name, value, old, widget) {
      hooks.widgetChanged?.(this, widget);
    }

    onDrawForeground(ctx) {
      hooks.drawForeground?.(this, ctx);
    }

    onDrawBackground(ctx) {
      hooks.drawBackground?.(this, ctx);
    }

    getExtraMenuOptions(canvas, options) {
      return hooks.extraMenuOptions?.(this, options);
    }
  }
  ServerNode.prototype.isServerNode = true;
  Object.defineProperty(ServerNode, "name", { value: `${classType.replace(/\W/g, "_")}Node` });
  return ServerNode;
}

class NoteNode extends LGraphNode {
  static title = "Note";
  constructor(title) {
    super(title);
    this.serialize_widgets = true;
    this.color = "#432";
    this.bgcolor = "#653";
  }
}

class RerouteNode extends LGraphNode {
  static title = "Reroute";
  constructor(title) {
    super(title);
    this.addInput("", "*");
    this.addOutput("", "*");
    this.size = [75, 26];
    this.collapsable = false;
  }
}

/**
 * An editor-only source for widget inputs: link it to a widget (which then becomes an input) and it
 * takes that widget's type, value and control; several widgets of the same type can share it.
 * The server reads its value when converting the workflow (it never reaches the API prompt).
 */
function makePrimitiveNode(hooks) {
  return class PrimitiveNode extends LGraphNode {
    static title = "Primitive";

    constructor(title) {
      super(title);
      this.serialize_widgets = true;
      this.addOutput("connect to widget input", "*");
      this.size = [240, 46];
    }

    /** The first widget input this node feeds: {node, input, spec}. */
    firstTarget() {
      for (const linkId of this.outputs[0].links ?? []) {
        const link = this.graph?._links.get(linkId);
        const node = link && this.graph.getNodeById(link.target_id);
        const input = node?.inputs?.[link.target_slot];
        if (!input?.widget) continue;
        const spec = orderedInputs(node.constructor.nodeDef ?? {}).find((i) => i.name === input.widget.name)?.spec;
        if (spec) return { node, input, spec };
      }
      return null;
    }

    onConnectOutput(slot, type, input) {
      return Boolean(input?.widget); // only widgets can be driven by a primitive
    }

    onConnectionsChange(kind, slot, connected) {
      if (kind !== LiteGraph.OUTPUT) return;
      if (connected && !this.widgets?.length) this.adopt();
      if (!connected && !this.outputs[0].links?.length) this.reset();
    }

    adopt(values) {
      const target = this.firstTarget();
      if (!target) return;
      const { node, input, spec } = target;
      this.widgets = [];
      const widget = addInputWidget(this, input.widget.name, spec, hooks);
      const source = node.widgets?.find((w) => w.name === input.widget.name);
      if (source) widget.value = source.value;
      if (values) {
        const [value, control] = Array.isArray(values) ? values : [values.value, values.control_after_generate];
        if (value !== undefined && value !== null) widget.value = value;
        const controlWidget = this.widgets.find((w) => w.controls);
        if (controlWidget && control) controlWidget.value = control === true ? "randomize" : control;
      }
      this.outputs[0].type = input.type;
      this.outputs[0].name = input.widget.name;
      this.outputs[0].widget = { name: input.widget.name };
      this.title = `Primitive (${input.widget.name})`;
      this.setSize([Math.max(this.size[0], 260), this.computeSize()[1]]);
    }

    reset() {
      this.widgets = [];
      this.outputs[0].type = "*";
      this.outputs[0].name = "connect to widget input";
      delete this.outputs[0].widget;
      this.title = "Primitive";
      this.setSize([240, 46]);
    }

    onConfigure(info) {
      this.pendingValues = info.widgets_values;
    }

    onGraphConfigured() {
      if (this.outputs[0].links?.length) this.adopt(this.pendingValues);
      this.pendingValues = undefined;
    }

    onSerialize(o) {
      const [value, control] = this.widgets ?? [];
      o.widgets_values = value ? { value: value.value, ...(control ? { control_after_generate: control.value } : {}) } : {};
      tidySerialized(o);
    }

    onWidgetChanged(name, value, old, widget) {
      hooks.widgetChanged?.(this, widget);
    }
  };
}

function registerEditorNodes(hooks) {
  for (const [type, base] of [["Note", NoteNode], ["MarkdownNote", NoteNode]]) {
    const cls = class extends base {
      constructor(title) {
        super(title);
        addInputWidget(this, "text", ["STRING", { multiline: true }], hooks);
        this.size = [320, 140];
      }
      onConfigure(info) {
        applyWidgetValues(this, info.widgets_values);
      }
      onSerialize(o) {
        o.widgets_values = widgetValuesOf(this);
        tidySerialized(o);
      }
    };
    cls.title = type === "Note" ? "Note" : "Markdown Note";
    LiteGraph.registerNodeType(type, cls);
    cls.category = "utils";
  }
  LiteGraph.registerNodeType("Reroute", RerouteNode);
  RerouteNode.category = "utils";
  const PrimitiveNode = makePrimitiveNode(hooks);
  LiteGraph.registerNodeType("PrimitiveNode", PrimitiveNode);
  PrimitiveNode.category = "utils";
}

// ComfyUI's look for node modes: bypassed (4) purple, muted (2) dimmed; litegraph colours by mode only its box.
const MODE_COLORS = { 2: ["#262626", "#1e1e1e"], 4: ["#6b3a72", "#4a2850"] };
for (const [property, index] of [["renderingColor", 0], ["renderingBgColor", 1]]) {
  const base = Object.getOwnPropertyDescriptor(LGraphNode.prototype, property).get;
  Object.defineProperty(LGraphNode.prototype, property, {
    configurable: true,
    get() {
      return MODE_COLORS[this.mode]?.[index] ?? base.call(this);
    },
  });
}

/**
 * Replace every registered node type with the ones `objectInfo` declares. Each class is offered to
 * `hooks.beforeRegister(cls, def)` first (extensions patch it there); the swap itself is synchronous.
 */
export async function registerNodeTypes(objectInfo, hooks) {
  const built = [];
  for (const [classType, def] of Object.entries(objectInfo)) {
    if (VIRTUAL_TYPES.has(classType)) continue;
    const cls = makeNodeClass(classType, def, hooks);
    cls.category = def.category || "uncategorized";
    cls.description = def.description ?? "";
    built.push([classType, cls, def]);
  }
  if (hooks.beforeRegister) {
    for (const [, cls, def] of built) await hooks.beforeRegister(cls, def);
  }
  for (const type of Object.keys(LiteGraph.registered_node_types)) LiteGraph.unregisterNodeType(type);
  registerEditorNodes(hooks);
  for (const [classType, cls] of built) {
    const { category } = cls; // litegraph derives a category from the type name; keep ours (or an extension's)
    LiteGraph.registerNodeType(classType, cls);
    cls.category = category;
  }
}

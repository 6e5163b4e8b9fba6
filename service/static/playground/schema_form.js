// A job form built from the OpenAPI schema of POST /v1/jobs: one field per property of the kind's request schema,
// its control chosen by the property's type (enum, boolean, number, list, image input), its limits and default
// taken from the schema. Empty fields, and choices left at their default, are left out of the body, so the server
// fills in its defaults.

import { imageInput } from "./image_input.js";

const SET_ELSEWHERE = new Set(["kind", "model"]); // the kind and model pickers above the form
const IMAGE_INPUT = "#/components/schemas/ImageInput";

/** The job kinds and their request schemas: the discriminator of POST /v1/jobs. */
export function jobKinds(openapi) {
  const body = openapi.paths["/v1/jobs"].post.requestBody.content["application/json"].schema;
  return Object.fromEntries(Object.entries(body.discriminator.mapping).map(([kind, ref]) => [kind, deref(openapi, ref)]));
}

function deref(openapi, ref) {
  return openapi.components.schemas[ref.split("/").pop()];
}

/** The non-null alternatives of a property, and whether null is one of them. */
function alternatives(prop) {
  const all = prop.anyOf || prop.oneOf || [prop];
  const options = all.filter((s) => s.type !== "null");
  return { options, nullable: options.length < all.length };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

function numberAttrs(schema) {
  return {
    type: "number",
    min: schema.minimum ?? schema.exclusiveMinimum,
    max: schema.maximum ?? schema.exclusiveMaximum,
    step: schema.type === "integer" ? "1" : "any",
  };
}

function parseScalar(text, schema) {
  if (schema.type === "integer" || schema.type === "number") {
    const value = Number(text);
    return text.trim() === "" || Number.isNaN(value) ? text : value;
  }
  return text;
}

/** A list of objects (or nulls), typed as JSON: e.g. `view_args`. */
function jsonList(id) {
  const input = el("input", { id, type: "text", placeholder: 'a JSON list, e.g. [null, {"seed": 1}]' });
  const read = () => {
    if (input.value.trim() === "") return undefined;
    let value;
    try {
      value = JSON.parse(input.value);
    } catch {
      throw new Error("not JSON: a list of objects or nulls, e.g. [null, {\"seed\": 1}]");
    }
    if (!Array.isArray(value)) throw new Error("must be a JSON list, e.g. [null, {\"seed\": 1}]");
    return value;
  };
  return { element: input, read };
}

/** One control for one property: {element, read()} where read() gives the value to send, or undefined. */
function control(name, prop, id, context) {
  const { options, nullable } = alternatives(prop);
  if (options.some((s) => s.$ref === IMAGE_INPUT)) return imageInput(name, id, context);
  const array = options.find((s) => s.type === "array");
  const scalar = options.find((s) => s.type !== "array");
  if (array && alternatives(array.items || {}).options.some((s) => s.type === "object")) return jsonList(id);
  if (array) {
    const item = array.items || {};
    const example = item.enum ? `of ${item.enum.join(", ")}` : item.type === "string" ? "e.g. a, b" : "e.g. 1, 2, 3";
    const placeholder = prop.default != null ? String(prop.default) : `comma-separated, ${example}`;
    const input = el("input", { id, type: "text", placeholder, inputmode: item.type === "string" ? null : "decimal" });
    const read = () => {
      const parts = input.value.split(item.type === "string" ? "," : /[\s,]+/).map((s) => s.trim()).filter(Boolean);
      if (!parts.length) return undefined;
      if (scalar && parts.length === 1) return parseScalar(parts[0], scalar);
      return parts.map((p) => parseScalar(p, item));
    };
    return { element: input, read };
  }
  if (scalar.enum) {
    const select = el("select", { id });
    if (nullable || prop.default === undefined) select.append(el("option", { value: "", text: "(default)" }));
    for (const value of scalar.enum) select.append(el("option", { value, text: value, selected: value === prop.default }));
    return { element: select, read: () => (select.value && select.value !== prop.default ? select.value : undefined) };
  }
  if (scalar.type === "boolean") {
    const box = el("input", { id, type: "checkbox", checked: prop.default === true });
    return { element: box, read: () => (box.checked === (prop.default === true) ? undefined : box.checked) };
  }
  if (scalar.type === "integer" || scalar.type === "number") {
    const input = el("input", { id, ...numberAttrs(scalar), placeholder: prop.default ?? "" });
    return { element: input, read: () => (input.value === "" ? undefined : parseScalar(input.value, scalar)) };
  }
  const input = el("input", { id, type: "text", maxlength: scalar.maxLength, placeholder: prop.default ?? "" });
  if (name === "prompt" && context.model && !context.model.text && context.model.classes.length) {
    const list = el("datalist", { id: `${id}-classes` });
    for (const c of context.model.classes) list.append(el("option", { value: c }));
    input.setAttribute("list", list.id);
    return { element: el("span", { class: "with-list" }, input, list), read: () => input.value || undefined };
  }
  return { element: input, read: () => input.value || undefined };
}

/** Builds the form of `kind` into `container`; `context`: {model, upload(blob)}. */
export function buildForm(container, openapi, kind, context) {
  const schema = jobKinds(openapi)[kind];
  const required = new Set(schema.required || []);
  const fields = new Map();
  container.replaceChildren();
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (SET_ELSEWHERE.has(name)) continue;
    const id = `field-${name}`;
    const { element, read } = control(name, prop, id, context);
    const label = el("label", { for: id, text: name + (required.has(name) ? " *" : "") });
    const help = el("small", { class: "help", text: prop.description || "" });
    const error = el("p", { class: "error", role: "alert" });
    const box = el("div", { class: "field", "data-field": name }, label, element, help, error);
    container.append(box);
    fields.set(name, { read, box, error });
  }
  return {
    description: schema.description || "",
    fields,
    /** The request body: the kind, the model (a train job names the model it makes), and every filled-in field
     * that is shown. */
    async body() {
      const body = { kind };
      if (kind !== "train") body.model = context.model?.id;
      for (const [name, field] of fields) {
        if (field.box.hidden) continue; // a field this model and choice do not take (stepping.js)
        let value;
        try {
          value = await field.read();
        } catch (error) {
          error.field = name; // an upload refused: its error belongs next to this field
          throw error;
        }
        if (value !== undefined) body[name] = value;
      }
      return body;
    },
  };
}

/** The form field a 422 detail's `loc` names: ["body", kind?, field, ...]. */
export function fieldOf(loc, kind) {
  const path = loc[0] === "body" ? loc.slice(1) : loc;
  return path[0] === kind ? path[1] : path[0];
}

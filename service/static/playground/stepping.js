// The solver fields of a sampling kind, fitted to the chosen model: the schema's `sampler` select offers only the
// samplers of the model's family (GET /v1/models `samplers`, core/samplers.py), its default first and marked as
// such; `steps` and the sampler's options follow it as one group; a hint gives the selected sampler's summary and
// good step range; `eta`, `spacing` and `stride` show only where that sampler takes them (a hidden field is not
// sent).

const TAKES = ["eta", "spacing", "stride"];
const SOLVER = ["sampler", "eta", "spacing"]; // `steps`/`stride` also place denoise's `i_start`: they stay

/** The sampler a job runs when it names none: the one GET /v1/models marks `default`. */
function defaultOf(model) {
  return model.samplers.find((s) => s.default)?.name ?? model.samplers[0]?.name;
}

/** The hint: "dpmpp_2m: DPM-Solver++(2M), ...; good at 10-25 steps", and where `steps` falls outside that. */
function hintOf(info, steps) {
  const [lo, hi] = info.good_steps;
  let text = `${info.name}: ${info.summary}; good at ${lo}-${hi} steps`;
  const outside = steps !== undefined && (steps < lo || steps > hi);
  if (steps !== undefined && steps < info.min_steps) text += ` (needs at least ${info.min_steps})`;
  else if (outside) text += ` (${steps} is ${steps < lo ? "below" : "above"} that)`;
  return { text, outside };
}

function input(field) {
  return field?.box.querySelector("input, select");
}

/** Fits `form` (schema_form.js's buildForm) to `model` for `kind`; nothing to do where the kind takes no sampler or
 * the server does not list samplers. */
export function fitStepping(form, model, kind) {
  const fields = form.fields;
  const select = input(fields.get("sampler"));
  if (!select || !Array.isArray(model.samplers)) return;
  const show = (names, on) => names.forEach((n) => fields.get(n) && (fields.get(n).box.hidden = !on));
  if (!model.samplers.length) {
    show(SOLVER, false); // the one-step denoiser runs no loop
    return;
  }
  const box = fields.get("sampler").box;
  box.after(...["steps", ...TAKES].filter((n) => fields.has(n)).map((n) => fields.get(n).box)); // one group
  const fallback = defaultOf(model);
  select.replaceChildren(
    new Option(`${fallback} (model default)`, ""),
    ...model.samplers.filter((s) => s.name !== fallback).map((s) => new Option(s.name, s.name)),
  );
  const steps = input(fields.get("steps"));
  const method = kind === "denoise" ? input(fields.get("method")) : null; // only `iterative` runs a solver
  const hint = document.createElement("p");
  hint.id = "sampler-hint";
  hint.className = "hint";
  hint.setAttribute("aria-live", "polite");
  select.after(hint);

  const update = () => {
    const info = model.samplers.find((s) => s.name === (select.value || fallback)) ?? model.samplers[0];
    const active = !method || method.value === "iterative";
    show(["sampler"], active);
    TAKES.forEach((name) => show([name], active ? info.takes.includes(name) : name === "stride"));
    if (steps) {
      steps.min = info.min_steps;
      steps.placeholder = select.value ? info.default_steps : (model.defaults?.steps ?? "");
    }
    const count = steps && steps.value !== "" ? Number(steps.value) : undefined;
    const { text, outside } = hintOf(info, Number.isNaN(count) ? undefined : count);
    hint.textContent = text;
    hint.dataset.outside = String(outside);
  };
  select.addEventListener("change", update);
  method?.addEventListener("change", update);
  steps?.addEventListener("input", update);
  update();
}

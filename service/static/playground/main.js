// The playground page: key, model and kind pickers, the schema-built form, and the run of the submitted job.

import { ApiError, api, storeKey, storedKey } from "./api.js";
import { Gallery } from "./gallery.js";
import { LossChart } from "./loss_chart.js";
import { buildForm, fieldOf, jobKinds } from "./schema_form.js";
import { fitStepping } from "./stepping.js";
import { watch } from "./watch.js";

const $ = (id) => document.getElementById(id);
const PREFERRED = { model: "mnist-ddpm", kind: "sample" };
const state = { openapi: null, kinds: {}, models: [], form: null, streaming: false, run: null };
const gallery = new Gallery($("gallery"));
const loss = new LossChart($("loss-chart"), $("loss-caption"));

function clearErrors() {
  document.querySelectorAll(".error").forEach((p) => (p.textContent = ""));
  document.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
}

/** Shows `message` next to the field `name`; false if the page has no such field. */
function fieldError(name, message) {
  const box = document.querySelector(`[data-field="${CSS.escape(String(name))}"]`);
  if (!box) return false;
  box.querySelector(".error").textContent = message;
  box.setAttribute("aria-invalid", "true");
  return true;
}

/** An error envelope next to the fields it names (the key's for a 401), else under the form. */
function showError(error, kind) {
  if (!(error instanceof ApiError)) {
    const atField = error.field !== undefined && fieldError(error.field, `${error.field}: ${error.message}`);
    if (!atField) $("form-error").textContent = error.message || String(error);
    return;
  }
  if (error.status === 401) {
    fieldError("api_key", error.message);
    return;
  }
  let placed = error.field !== undefined && fieldError(error.field, error.message);
  for (const detail of error.details) {
    const loc = detail.loc || [];
    const name = fieldOf(loc, kind);
    const path = loc.slice(loc.indexOf(name)).join(".");
    if (name !== undefined && fieldError(name, `${path}: ${detail.msg}`)) placed = true;
  }
  if (!placed) $("form-error").textContent = error.message;
}

function selected(select, values, preferred) {
  return values.includes(select.value) ? select.value : values.includes(preferred) ? preferred : values[0];
}

function canRun(model, kind) {
  return kind === "train" || model.capabilities.some((c) => c === kind || c.startsWith(`${kind}.`));
}

async function loadModels() {
  clearErrors();
  try {
    state.models = (await api.models()).models;
  } catch (error) {
    showError(error, null); // the form stays as it was: submitting shows the same refusal
    return;
  }
  const select = $("model");
  const ids = state.models.filter((m) => m.available).map((m) => m.id);
  const choice = selected(select, ids, PREFERRED.model);
  select.replaceChildren(
    ...state.models.map((m) => {
      const option = new Option(m.available ? m.id : `${m.id} (unavailable)`, m.id, false, m.id === choice);
      option.disabled = !m.available;
      option.title = m.reason || m.description;
      return option;
    }),
  );
  refreshKinds();
}

function refreshKinds() {
  const model = state.models.find((m) => m.id === $("model").value);
  const select = $("kind");
  const runnable = Object.keys(state.kinds).filter((k) => model && canRun(model, k));
  const choice = selected(select, runnable, PREFERRED.kind);
  select.replaceChildren(
    ...Object.keys(state.kinds).map((k) => {
      const option = new Option(k, k, false, k === choice);
      option.disabled = !runnable.includes(k);
      return option;
    }),
  );
  rebuildForm();
}

function rebuildForm() {
  const kind = $("kind").value;
  const model = state.models.find((m) => m.id === $("model").value);
  if (!kind || !model) {
    $("fields").replaceChildren();
    state.form = null;
    return;
  }
  state.form = buildForm($("fields"), state.openapi, kind, { model, upload: api.upload });
  fitStepping(state.form, model, kind);
  $("kind-help").textContent = state.form.description;
}

function showJob(job) {
  const status = $("job-status");
  const p = job.progress;
  const where = job.status === "queued" && job.queue_position ? `, position ${job.queue_position} in the queue` : "";
  const step = p ? ` · ${p.stage} ${p.step}/${p.total}` : "";
  status.textContent = `${job.kind} ${job.id}: ${job.status}${where}${step}`;
  if (job.error) status.textContent += ` · ${job.error.type}: ${job.error.message}`;
  status.dataset.status = job.status;
  status.dataset.jobId = job.id;
  $("progress").value = job.status === "succeeded" ? 1 : (p?.fraction ?? 0);
  if (job.kind === "train" && p?.loss != null) loss.add(p.step, p.loss);
  gallery.update(job).catch((error) => showError(error, job.kind));
}

function showPreview(preview) {
  $("preview-box").hidden = false;
  $("preview").src = preview.data_url;
}

async function follow(job) {
  state.run?.abort();
  const run = new AbortController();
  state.run = run;
  gallery.clear();
  loss.reset();
  $("preview-box").hidden = true;
  $("loss-box").hidden = job.kind !== "train";
  $("cancel").hidden = false;
  $("cancel").onclick = () => api.cancel(job.id).catch((error) => showError(error, job.kind));
  showJob(job);
  try {
    await watch(job.id, { onJob: showJob, onPreview: showPreview }, { streaming: state.streaming, signal: run.signal });
  } catch (error) {
    if (!run.signal.aborted) showError(error, job.kind);
  } finally {
    if (state.run === run) $("cancel").hidden = true;
  }
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  if (!state.form) return;
  const kind = $("kind").value;
  const button = $("submit");
  button.disabled = true;
  let job;
  try {
    job = await api.submit(await state.form.body());
  } catch (error) {
    showError(error, kind);
    return;
  } finally {
    button.disabled = false;
  }
  follow(job);
}

async function init() {
  const key = $("api-key");
  key.value = storedKey();
  key.addEventListener("change", () => {
    storeKey(key.value.trim());
    loadModels();
  });
  state.openapi = await api.schema();
  state.kinds = jobKinds(state.openapi);
  state.streaming = "/v1/jobs/{job_id}/events" in state.openapi.paths;
  $("model").addEventListener("change", refreshKinds);
  $("kind").addEventListener("change", rebuildForm);
  $("job-form").addEventListener("submit", submit);
  await loadModels();
  document.body.dataset.ready = "true";
}

init().catch((error) => showError(error, null));

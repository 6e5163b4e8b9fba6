// The API as this page calls it: every request carries the key, every failure becomes an ApiError.

const KEY = "diffusion-jobs.api-key";

export function storedKey() {
  return localStorage.getItem(KEY) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

/** A 4xx/5xx answer: the API's error envelope {type, message, details}. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.type = error.type;
    this.details = error.details || [];
  }
}

export function headers(extra = {}) {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

/** fetch with the key; a non-2xx answer throws ApiError (the envelope, or a stand-in when the body is not one). */
export async function request(path, { method = "GET", body, type, signal, extra } = {}) {
  const init = { method, signal, headers: headers(extra) };
  if (body !== undefined) {
    const raw = body instanceof Blob;
    init.body = raw ? body : JSON.stringify(body);
    init.headers["Content-Type"] = raw ? type || body.type : "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function errorOf(response) {
  let error = { type: "http_error", message: `${response.status} ${response.statusText}`, details: [] };
  try {
    const body = await response.json();
    if (body && body.error) error = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, error);
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export const api = {
  schema: () => fetch("/openapi.json").then((r) => r.json()),
  models: () => getJson("/v1/models"),
  submit: (body) => getJson("/v1/jobs", { method: "POST", body }),
  job: (id, wait) => getJson(`/v1/jobs/${id}${wait ? `?wait=${wait}` : ""}`),
  cancel: (id) => getJson(`/v1/jobs/${id}`, { method: "DELETE" }),
  upload: (blob) => getJson("/v1/uploads", { method: "POST", body: blob }),
  blob: async (url) => (await request(url)).blob(),
};

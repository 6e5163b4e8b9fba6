// Following a job: the Server-Sent Events of GET /v1/jobs/{id}/events read with fetch streaming (EventSource cannot
// send the Authorization header), reconnecting with Last-Event-ID; long polls of GET /v1/jobs/{id}?wait=2 where the
// server has no events route.

import { api, errorOf, headers } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const RETRY_MS = 1000;

/** The events of one stream as they arrive: {id, event, data}, the blank line ending each one. */
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (message.data.length) yield { ...message, data: message.data.join("\n") };
        message = { data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") message.data.push(text);
      else if (field === "id" || field === "event") message[field] = text;
    }
  }
}

async function stream(jobId, handlers, signal) {
  let lastId = null;
  let job = null;
  while (!signal.aborted) {
    const extra = { Accept: "text/event-stream", ...(lastId === null ? {} : { "Last-Event-ID": lastId }) };
    const response = await fetch(`/v1/jobs/${jobId}/events`, { headers: headers(extra), signal });
    if (!response.ok) throw await errorOf(response);
    for await (const message of events(response.body)) {
      if (message.id !== undefined) lastId = message.id;
      const data = JSON.parse(message.data);
      if (message.event === "preview") handlers.onPreview(data);
      else if (message.event === "job") {
        job = data;
        handlers.onJob(job);
      }
    }
    if (job && TERMINAL.has(job.status)) return job;
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS)); // the stream broke early: pick up where it was
  }
  return job;
}

async function poll(jobId, handlers, signal) {
  let job = await api.job(jobId);
  handlers.onJob(job);
  while (!TERMINAL.has(job.status) && !signal.aborted) {
    job = await api.job(jobId, 2);
    handlers.onJob(job);
  }
  return job;
}

/** Follows the job to its end, calling handlers.onJob(job) at each change and handlers.onPreview(preview). */
export async function watch(jobId, handlers, { streaming, signal }) {
  if (streaming) {
    try {
      return await stream(jobId, handlers, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      console.warn("event stream unavailable, polling instead:", error);
    }
  }
  return poll(jobId, handlers, signal);
}

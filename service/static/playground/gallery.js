// A job's artifacts: downloads need the Authorization header, so each one is fetched as a blob and shown through an
// object URL (an image where it is one), with a link that saves it under its name.

import { api } from "./api.js";

export class Gallery {
  constructor(container) {
    this.container = container;
    this.shown = new Set();
    this.urls = [];
    this.generation = 0; // bumped by clear(): a download of an earlier job's artifact is then dropped
    this.queue = Promise.resolve(); // updates run one after another, so the last one ends after every download
  }

  clear() {
    this.generation += 1;
    this.urls.forEach((url) => URL.revokeObjectURL(url));
    this.urls = [];
    this.shown.clear();
    this.container.replaceChildren();
    delete this.container.dataset.complete;
  }

  /** Adds the job's artifacts not shown yet (a running job's list grows); once an ended job's are all shown, the
   * container's `data-complete` is set. */
  update(job) {
    const run = this.queue.then(() => this.add(job));
    this.queue = run.catch(() => {});
    return run;
  }

  async add(job) {
    const generation = this.generation;
    for (const artifact of job.artifacts) {
      if (this.shown.has(artifact.name)) continue;
      this.shown.add(artifact.name);
      const blob = await api.blob(artifact.url);
      if (generation !== this.generation) return;
      const url = URL.createObjectURL(blob);
      this.urls.push(url);
      const figure = document.createElement("figure");
      figure.dataset.artifact = artifact.name;
      if (artifact.media_type.startsWith("image/")) {
        const img = Object.assign(document.createElement("img"), { src: url, alt: artifact.name });
        figure.append(img);
      }
      const link = Object.assign(document.createElement("a"), { href: url, download: artifact.name });
      link.textContent = `${artifact.name} (${artifact.bytes} bytes)`;
      const caption = document.createElement("figcaption");
      caption.append(link);
      figure.append(caption);
      this.container.append(figure);
    }
    if (["succeeded", "failed", "canceled"].includes(job.status)) this.container.dataset.complete = "true";
  }
}

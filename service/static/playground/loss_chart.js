// A training job's loss as it grows: one point per job event that carries progress.loss, drawn as an SVG polyline.

const SVG = "http://www.w3.org/2000/svg";
const W = 400;
const H = 160;
const PAD = 8;

export class LossChart {
  constructor(svg, caption) {
    this.svg = svg;
    this.caption = caption;
    this.points = [];
  }

  reset() {
    this.points = [];
    this.svg.replaceChildren();
    this.caption.textContent = "training loss";
  }

  /** Records the loss at `step` (a repeated step is ignored) and redraws. */
  add(step, loss) {
    const last = this.points.at(-1);
    if (last && last[0] >= step) return;
    this.points.push([step, loss]);
    this.draw();
  }

  draw() {
    const steps = this.points.map((p) => p[0]);
    const losses = this.points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
    const [y0, y1] = [Math.min(...losses), Math.max(...losses)];
    const x = (s) => PAD + ((s - x0) / (x1 - x0 || 1)) * (W - 2 * PAD);
    const y = (l) => H - PAD - ((l - y0) / (y1 - y0 || 1)) * (H - 2 * PAD);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", this.points.map(([s, l]) => `${x(s)},${y(l)}`).join(" "));
    line.setAttribute("class", "loss");
    this.svg.replaceChildren(line);
    const latest = losses.at(-1);
    this.caption.textContent = `training loss: ${latest.toFixed(4)} at step ${steps.at(-1)} (min ${y0.toFixed(4)})`;
  }
}

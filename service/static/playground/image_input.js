// An image input field: draw on a canvas (a digit, or a mask: white = regenerate), upload a file, or name a dataset
// item. Drawings and files are sent to POST /v1/uploads on submit, and the job gets {"upload_id": ...}.

const DISPLAY = 280; // the drawing's side on screen; it is downscaled to the model's image size

function node(tag, attrs = {}, ...children) {
  const element = Object.assign(document.createElement(tag), attrs);
  element.append(...children);
  return element;
}

/** A canvas of the model's size drawn large: white strokes on black, as MNIST digits and masks are. */
function drawing(size) {
  const scale = Math.max(1, Math.floor(DISPLAY / size));
  const canvas = node("canvas", { width: size * scale, height: size * scale, className: "draw" });
  const ctx = canvas.getContext("2d");
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 2.4 * scale;
  ctx.lineCap = ctx.lineJoin = "round";
  let last = null;
  const at = (e) => {
    const box = canvas.getBoundingClientRect();
    return [((e.clientX - box.left) * canvas.width) / box.width, ((e.clientY - box.top) * canvas.height) / box.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
    ctx.beginPath();
    ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fillStyle = "#fff";
    ctx.fill();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const next = at(e);
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...next);
    ctx.stroke();
    last = next;
  });
  const end = () => (last = null);
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  /** The drawing at the model's size, as PNG. */
  const png = () => {
    const small = node("canvas", { width: size, height: size });
    const sctx = small.getContext("2d");
    sctx.imageSmoothingQuality = "high";
    sctx.drawImage(canvas, 0, 0, size, size);
    return new Promise((resolve) => small.toBlob(resolve, "image/png"));
  };
  return { canvas, clear, png };
}

/** The field `name`: {element, read()}; read() uploads what is drawn or chosen and gives the image input. */
export function imageInput(name, id, { model, upload }) {
  const size = model?.image_size || 28;
  const pad = drawing(size);
  const file = node("input", { type: "file", accept: "image/png,image/jpeg,image/webp" });
  const dataset = node("input", { type: "text", value: "mnist-5k", ariaLabel: "dataset" });
  const index = node("input", { type: "number", min: 0, step: 1, value: 0, ariaLabel: "index" });
  const clear = node("button", { type: "button", textContent: "Clear" });
  clear.addEventListener("click", pad.clear);
  const panes = {
    draw: node("div", { className: "pane" }, pad.canvas, clear),
    file: node("div", { className: "pane" }, file),
    dataset: node("div", { className: "pane" }, dataset, index),
  };
  const source = node("select", { id });
  const labels = { draw: name === "mask" ? "draw a mask (white = regenerate)" : "draw", file: "upload a file" };
  for (const value of Object.keys(panes)) {
    source.append(node("option", { value, textContent: labels[value] || "dataset item" }));
  }
  const show = () => Object.entries(panes).forEach(([key, pane]) => (pane.hidden = key !== source.value));
  source.addEventListener("change", show);
  show();
  const read = async () => {
    if (source.value === "dataset") return { dataset: dataset.value, index: Number(index.value) };
    const blob = source.value === "draw" ? await pad.png() : file.files[0];
    if (!blob) return undefined;
    return { upload_id: (await upload(blob)).id };
  };
  return { element: node("div", { className: "image-input" }, source, ...Object.values(panes)), read };
}

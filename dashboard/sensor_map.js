// The live map's SVG: tooltip on hover, pick on click, wheel zoom, drag to pan, double click
// to reset. Streamlit calls this again with new data on every refresh; the planner's zoom and
// pick survive it because they live on the map's root element.

const ZOOM_STEP = 1.2;
const MAX_ZOOM = 40;

function viewBoxOf(svg) {
  return svg.getAttribute("viewBox").split(" ").map(Number);
}

function toMap(svg, event) {
  const box = viewBoxOf(svg);
  const rect = svg.getBoundingClientRect();
  const scale = Math.max(box[2] / rect.width, box[3] / rect.height);
  const cx = box[0] + box[2] / 2 + (event.clientX - rect.left - rect.width / 2) * scale;
  const cy = box[1] + box[3] / 2 + (event.clientY - rect.top - rect.height / 2) * scale;
  return { x: cx, y: cy, scale };
}

function setView(root, svg, box) {
  // Circles grow on screen more slowly than the map, so a zoomed corridor stays legible.
  root.view = box;
  svg.setAttribute("viewBox", box.join(" "));
  const zoom = root.full[2] / box[2];
  svg.style.setProperty("--r", `${root.radius * zoom ** -0.7}px`);
}

function showTip(root, circle, event) {
  const tip = root.querySelector(".tip");
  const d = circle.dataset;
  const title = root.querySelector("svg").dataset.viewTitle;
  const lines = [
    ["b", `Sensor ${d.id}`],
    ["span", `Now: ${d.now}`],
    ["span", `${title}: ${d.view}`],
    ["span", `Interval: ${d.interval}`],
  ];
  place(root, tip, lines, event);
}

function place(root, tip, lines, event) {
  tip.replaceChildren();
  lines.forEach(([tag, text], i) => {
    if (i) tip.appendChild(document.createElement("br"));
    const node = document.createElement(tag);
    node.textContent = text;
    tip.appendChild(node);
  });
  const rect = root.getBoundingClientRect();
  tip.style.display = "block";
  const left = Math.min(event.clientX - rect.left + 14, rect.width - tip.offsetWidth - 4);
  const top = Math.min(event.clientY - rect.top + 14, rect.height - tip.offsetHeight - 4);
  tip.style.left = `${Math.max(left, 4)}px`;
  tip.style.top = `${Math.max(top, 4)}px`;
}

function wire(root) {
  let drag = null;
  root.addEventListener("pointermove", (event) => {
    const svg = root.querySelector("svg");
    if (drag) {
      const { scale } = toMap(svg, event);
      const dx = (event.clientX - drag.x) * scale;
      const dy = (event.clientY - drag.y) * scale;
      if (Math.abs(event.clientX - drag.x) + Math.abs(event.clientY - drag.y) > 3) drag.moved = true;
      setView(root, svg, [drag.box[0] - dx, drag.box[1] - dy, drag.box[2], drag.box[3]]);
      return;
    }
    const circle = event.target.closest("circle");
    const incident = event.target.closest(".incident");
    if (circle) showTip(root, circle, event);
    else if (incident) {
      const text = incident.querySelector("title").textContent;
      place(root, root.querySelector(".tip"), [["b", text]], event);
    } else root.querySelector(".tip").style.display = "none";
  });
  root.addEventListener("pointerleave", () => {
    root.querySelector(".tip").style.display = "none";
  });
  root.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || event.target.closest("circle")) return;
    drag = { x: event.clientX, y: event.clientY, box: viewBoxOf(root.querySelector("svg")) };
    root.classList.add("dragging");
    root.setPointerCapture(event.pointerId);
  });
  const endDrag = () => {
    drag = null;
    root.classList.remove("dragging");
  };
  root.addEventListener("pointerup", endDrag);
  root.addEventListener("pointercancel", endDrag);
  root.addEventListener("click", (event) => {
    const circle = event.target.closest("circle");
    if (!circle) return;
    root.picked = circle.dataset.id;
    root.querySelectorAll("circle.picked").forEach((c) => c.classList.remove("picked"));
    circle.classList.add("picked");
    root.setStateValue("selected", circle.dataset.id);
  });
  root.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const svg = root.querySelector("svg");
      const box = viewBoxOf(svg);
      const factor = event.deltaY < 0 ? 1 / ZOOM_STEP : ZOOM_STEP;
      const width = Math.min(Math.max(box[2] * factor, root.full[2] / MAX_ZOOM), root.full[2]);
      const ratio = width / box[2];
      const at = toMap(svg, event);
      setView(root, svg, [
        at.x - (at.x - box[0]) * ratio,
        at.y - (at.y - box[1]) * ratio,
        width,
        box[3] * ratio,
      ]);
    },
    { passive: false },
  );
  root.addEventListener("dblclick", () => {
    setView(root, root.querySelector("svg"), root.full);
  });
}

export default function ({ parentElement, data, setStateValue }) {
  let root = parentElement.querySelector(".sensor-map");
  if (!root) {
    root = document.createElement("div");
    root.className = "sensor-map";
    parentElement.appendChild(root);
    wire(root);
  }
  root.setStateValue = setStateValue;
  root.style.height = `${data.height}px`;
  root.innerHTML = data.svg;
  const svg = root.querySelector("svg");
  const full = viewBoxOf(svg);
  const sameNetwork = root.full && root.full.join(" ") === full.join(" ");
  root.full = full;
  root.radius = data.radius;
  setView(root, svg, sameNetwork && root.view ? root.view : full);
  const tip = document.createElement("div");
  tip.className = "tip";
  const hint = document.createElement("div");
  hint.className = "hint";
  hint.textContent = "Wheel: zoom · drag: pan · double click: whole network";
  root.append(tip, hint);
  if (root.picked) {
    svg.querySelector(`circle[data-id="${CSS.escape(root.picked)}"]`)?.classList.add("picked");
  }
}

// braincam serve: upload one file, show the answer of POST /api/predict.
// document.body.dataset.state is idle | busy | done | error, for people and for tests.
"use strict";

const $ = (id) => document.getElementById(id);
let answer = null;
let latest = null;  // the AbortController of the newest upload: only its answer is shown

function setState(state, message = "") {
  document.body.dataset.state = state;
  $("status").textContent = state === "busy" ? message : "";
  $("error").textContent = state === "error" ? message : "";
}

async function upload(file) {
  if (latest) latest.abort();  // a newer choice replaces an answer still on its way
  const mine = new AbortController();
  latest = mine;
  setState("busy", `Analysing ${file.name} ...`);
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  let reply;
  let body;
  try {
    reply = await fetch("/api/predict", { method: "POST", body: form, signal: mine.signal });
    body = await reply.json();
  } catch (err) {
    if (mine !== latest) return;  // aborted for a newer upload
    setState("error", `No usable answer from the server (${err.message}).`);
    return;
  }
  if (mine !== latest) return;
  if (!reply.ok) {
    setState("error", body.error || `The server answered ${reply.status}.`);
    return;
  }
  answer = body;
  const slider = $("slice");
  slider.max = String(answer.slices.length - 1);
  slider.value = String(answer.focus);  // a volume opens on its most tumour-like slice
  $("slice-control").hidden = answer.slices.length < 2;
  $("file-name").textContent = answer.file;
  showSlice(answer.focus);
  $("result").hidden = false;
  setState("done");
}

function showSlice(index) {
  const item = answer.slices[index];
  $("label").textContent = item.label;
  $("slice-number").textContent =
    item.slice === null ? "" : `${item.slice} (${index + 1} of ${answer.slices.length})`;
  $("overlay").src = item.overlay;
  $("image").src = item.image;
  $("overlay-caption").textContent = `${answer.method} for ${item.label}`;
  const hasTumour = item.tumour_fraction !== undefined;  // only with braincam serve --segment
  $("tumour").hidden = !hasTumour;
  $("tumour").textContent = hasTumour
    ? `Predicted tumour (magenta outline): ${(100 * item.tumour_fraction).toFixed(1)} % of the model input`
    : "";
  const table = $("probs");
  table.replaceChildren();
  for (const [name, p] of Object.entries(item.probabilities)) {
    const row = table.insertRow();
    row.dataset.class = name;
    row.dataset.p = String(p);
    if (name === item.label) row.className = "top";
    row.insertCell().textContent = name;
    row.insertCell().textContent = `${(100 * p).toFixed(1)} %`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(120 * p)}px`;
    row.insertCell().appendChild(bar);
  }
  const list = $("warnings");
  list.replaceChildren();
  for (const text of item.warnings) {
    const li = document.createElement("li");
    li.textContent = text;
    list.appendChild(li);
  }
  if (!item.warnings.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    list.appendChild(li);
  }
}

$("file").addEventListener("change", (event) => {
  if (event.target.files.length) upload(event.target.files[0]);
});
$("slice").addEventListener("input", (event) => showSlice(Number(event.target.value)));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
});
